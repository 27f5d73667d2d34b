/*
 * The Calls and records page (docs/console.md): the calls in progress on
 * every server, and the call records with filters, pages (the API's
 * cursor) and a CSV download fetched with the token in its header.
 */
"use strict";

(function () {
	const C = window.understudyConsole;
	const $ = (id) => document.getElementById(id);
	const FILTERS = ["since", "until", "route_point", "post", "status",
	    "order"];
	const CSV_MAX = 100000;

	/* the pages so far: the cursor each began at (null: the first) */
	let cursors = [null], next = null, asked = null;

	function say(id, text, bad) {
		const m = $(id);
		m.textContent = text;
		m.className = "msg " + (bad ? "bad" : "");
	}

	/* ---- calls in progress ---- */

	async function refreshCalls() {
		const answers = await C.each("/v1/calls");
		const rows = [], missing = [];
		for (const a of answers) {
			if (a.error) {
				missing.push(a.server + ": " + a.error);
				continue;
			}
			for (const k of a.body.calls || []) {
				const tr = C.el("tr", "");
				tr.dataset.call = k.call;
				tr.append(C.el("td", "call", k.call),
				    C.el("td", "post", k.post),
				    C.el("td", "port", k.port),
				    C.el("td", "since", C.when(k.since)),
				    C.el("td", "origin", k.origin),
				    C.el("td", "server", a.server));
				rows.push(tr);
			}
		}
		$("calls").tBodies[0].replaceChildren(...rows);
		const n = rows.length;
		say("calls-msg", (n ? n + (n === 1 ? " call" : " calls") +
		    " in progress." : "No call in progress.") + (missing.length ?
		    " Not shown, these servers did not answer: " +
		    missing.join("; ") + "." : ""), missing.length > 0);
	}

	/* ---- records ---- */

	/* The filters of the form as query parameters (empty ones left out). */
	function query(extra) {
		const q = new URLSearchParams();
		const f = $("rec-form");
		for (const k of FILTERS) {
			const v = f.elements[k].value.trim();
			if (v) q.set(k, v);
		}
		for (const [k, v] of Object.entries(extra || {}))
			if (v !== null && v !== undefined) q.set(k, v);
		return q;
	}

	function duration(ms) {
		if (typeof ms !== "number") return "-";
		return (ms / 1000).toFixed(1) + " s";
	}

	function recordRow(r) {
		const tr = C.el("tr", "");
		tr.dataset.call = r.call;
		tr.append(C.el("td", "end", C.when(r.end)),
		    C.el("td", "call", r.call),
		    C.el("td", "rp", r.route_point),
		    C.el("td", "post", r.post),
		    C.el("td", "server", r.server),
		    C.el("td", "port", r.port ?? "-"),
		    C.el("td", "duration", duration(r.duration_ms)),
		    C.el("td", "status rec-" + r.status, r.status),
		    C.el("td", "ended", r.ended_by),
		    C.el("td", "closed", r.closed_by));
		return tr;
	}

	async function load(page) {
		const limit = $("rec-limit").value;
		const q = query({ limit, after: cursors[page] });
		say("rec-msg", "Asking…", false);
		let body;
		try {
			body = await C.api("/v1/records?" + q.toString());
		} catch (e) {
			$("records").tBodies[0].replaceChildren();
			say("rec-msg", "The records could not be read: " +
			    e.message, true);
			next = null;
			pager(page, 0);
			return;
		}
		cursors.length = page + 1;
		next = body.next || null;
		asked = page;
		$("records").tBodies[0].replaceChildren(
		    ...(body.records || []).map(recordRow));
		const first = page * Number(limit);
		pager(page, body.count);
		say("rec-msg", body.count ? "Records " + (first + 1) + " to " +
		    (first + body.count) + (next ? ", more follow" : "") +
		    ", the " + $("rec-order").value + " first, from " +
		    body.server + "'s copy" +
		    (body.synced ? "." : " (still catching up with the " +
			"records stream).") : "No record matches these filters" +
		    (page ? " past the previous page." : "."), false);
	}

	function pager(page, count) {
		$("rec-first").disabled = page === 0;
		$("rec-prev").disabled = page === 0;
		$("rec-next").disabled = !next;
		$("rec-page").textContent = count || page ? "Page " +
		    (page + 1) : "";
	}

	/*
	 * The records of the filters, all pages up to CSV_MAX, as a CSV file:
	 * fetched with the token in its header, handed to the browser as a
	 * Blob, so that no URL holds the token.
	 */
	async function csv() {
		say("rec-msg", "Preparing the CSV…", false);
		let text;
		try {
			text = await C.api("/v1/records?" +
			    query({ format: "csv", limit: CSV_MAX }).toString(),
			    { text: true });
		} catch (e) {
			say("rec-msg", "The CSV could not be made: " + e.message,
			    true);
			return;
		}
		const lines = text.split("\r\n").filter((l) => l !== "")
		    .length - 1;
		const a = document.createElement("a");
		a.href = URL.createObjectURL(new Blob([text],
		    { type: "text/csv" }));
		a.download = "records.csv";
		document.body.append(a);
		a.click();
		a.remove();
		setTimeout(() => URL.revokeObjectURL(a.href), 60000);
		say("rec-msg", "records.csv: " + lines + (lines === 1 ?
		    " record" : " records") + (lines >= CSV_MAX ? " (the " +
		    "first " + CSV_MAX + ": narrow the filters for the rest)" :
		    "") + ".", false);
	}

	document.addEventListener("DOMContentLoaded", () => {
		const poll = C.whileShown("calls", 2000, refreshCalls);
		C.addPage("calls", () => {
			poll();
			if (asked === null) load(0);
		});
		$("rec-form").addEventListener("submit", (e) => {
			e.preventDefault();
			cursors = [null];
			load(0);
		});
		$("rec-first").addEventListener("click", () => {
			cursors = [null];
			load(0);
		});
		$("rec-prev").addEventListener("click",
		    () => load(Math.max(0, asked - 1)));
		$("rec-next").addEventListener("click", () => {
			if (!next) return;
			cursors[asked + 1] = next;
			load(asked + 1);
		});
		$("rec-csv").addEventListener("click", csv);
	});
})();
