/*
 * The Timeline page: failovers, failbacks, fences and restarts from the
 * history the servers keep (GET /v1/timeline), the newest first. It is
 * read again while the page is shown: at every status the stream brings
 * (a failover changes the status) and every few seconds (a first call
 * or a fence event does not). Every value goes in as text.
 */
"use strict";

(function () {
	const POLL_MS = 3000, MIN_GAP_MS = 1000;
	let uc = null, timer = null, busy = false, last = 0;

	const $ = (id) => document.getElementById(id);

	function kindText(e) {
		return { failover: "⇢ failover", failback: "⇠ failback",
		    fence: "! fence", restart: "↻ restart" }[e.kind] || e.kind;
	}

	function render(body) {
		const tb = $("timeline").tBodies[0];
		const rows = [];
		for (const e of body.events || []) {
			const moved = e.post ? (e.from || "?") + " → " +
			    (e.to || "?") : e.server || "";
			const tr = uc.el("tr", "kind-" + e.kind,
			    uc.el("td", "time", (e.time || "")
				.replace("T", " ").replace("Z", " UTC")),
			    uc.el("td", "kind", kindText(e)),
			    uc.el("td", "post", e.post || "-"),
			    uc.el("td", "moved", moved),
			    uc.el("td", "what", e.summary || ""),
			    uc.el("td", "cause", e.cause || ""));
			tr.dataset.id = e.id || "";
			rows.push(tr);
		}
		tb.replaceChildren(...rows);
		$("timeline-msg").className = "msg";
		$("timeline-msg").textContent = rows.length ?
		    rows.length + " event" + (rows.length === 1 ? "" : "s") +
		    (body.more ? " (older ones exist: narrow the kind)" : "") +
		    ", as " + body.server + " read them" :
		    "No failover, failback, fence or restart yet.";
	}

	async function load() {
		if (busy || uc.current() !== "timeline") return;
		busy = true;
		last = Date.now();
		const kind = $("timeline-kind").value;
		try {
			render(await uc.api("/v1/timeline?limit=200" +
			    (kind ? "&kind=" + encodeURIComponent(kind) : "")));
		} catch (e) {
			$("timeline-msg").className = "msg bad";
			$("timeline-msg").textContent =
			    "Cannot read the timeline: " + e.message;
		} finally {
			busy = false;
		}
	}

	function onShow() {
		load();
		if (!timer)
			timer = setInterval(() => {
				if (uc.current() !== "timeline") {
					clearInterval(timer);
					timer = null;
				} else if (!document.hidden) {
					load();
				}
			}, POLL_MS);
	}

	function onStatus() {
		if (uc.current() === "timeline" && Date.now() - last >= MIN_GAP_MS)
			load();
	}

	document.addEventListener("DOMContentLoaded", () => {
		uc = window.understudyConsole;
		if (!uc || !$("page-timeline")) return;
		$("timeline-kind").addEventListener("change", load);
		uc.addPage("timeline", onShow, onStatus);
	});
})();
