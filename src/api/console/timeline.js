/*
 * The Timeline page: failovers, failbacks, fences and restarts from the
 * history the servers keep (GET /v1/timeline), the newest first. While
 * the page is shown it is read again at every "timeline" event the
 * stream brings (an event written, or a failover's first call added),
 * and every half minute in case the stream missed one (a reconnect does
 * not replay them). Every value goes in as text.
 */
"use strict";

(function () {
	const POLL_MS = 30000;
	let uc = null, timer = null, busy = false, again = false;

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
		again = false;
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
			if (again) load();
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

	/* a load under way when an event comes is followed by another */
	function onTimeline() {
		if (uc.current() !== "timeline") return;
		if (busy) again = true;
		else load();
	}

	document.addEventListener("DOMContentLoaded", () => {
		uc = window.understudyConsole;
		if (!uc || !$("page-timeline")) return;
		$("timeline-kind").addEventListener("change", load);
		uc.addPage("timeline", onShow);
		uc.onEvent("timeline", onTimeline);
	});
})();
