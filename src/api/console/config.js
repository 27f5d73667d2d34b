/*
 * The Configuration, Services and Links pages (docs/console.md). Services
 * and this server's links come live with every status of the stream; the
 * history, and the other servers' links, are asked for while shown.
 */
"use strict";

(function () {
	const C = window.understudyConsole;
	const $ = (id) => document.getElementById(id);
	const LINKS = { up: "▲", down: "▼" };

	function say(id, text, bad) {
		const m = $(id);
		m.textContent = text;
		m.className = "msg " + (bad ? "bad" : "");
	}

	/* ---- configuration ---- */

	let versions = [], inEffect = null, newest = null;
	const NEED_ADMIN = "Comparing two versions needs the admin token " +
	    "(their texts may hold secrets)";

	function effect(status) {
		const c = status && status.config;
		if (!c) return;
		$("cfg-effect").textContent = "Version in effect: " +
		    c.in_effect + ". " + status.server + " runs version " +
		    c.version + (c.local_file_differs ? "; its local file " +
			"differs from it" : "") + (c.restart_needed ? "; it " +
			"waits for a restart: " + JSON.stringify(
			    c.restart_needed) : "") + ".";
		if (inEffect !== null && c.in_effect !== inEffect &&
		    C.current() === "config")
			history();
		inEffect = c.in_effect;
	}

	/* the versions, newest first; a new newest selects the defaults */
	function options(sel, want, fresh) {
		const keep = fresh ? "" : sel.value;
		sel.replaceChildren(...versions.slice().reverse().map((v) => {
			const o = C.el("option", "", "version " + v.version);
			o.value = String(v.version);
			return o;
		}));
		sel.value = keep && versions.some((v) => String(v.version) ===
		    keep) ? keep : String(want);
	}

	async function history() {
		let body;
		try {
			body = await C.api("/v1/config/history");
		} catch (e) {
			say("cfg-msg", "The history could not be read: " +
			    e.message, true);
			return;
		}
		versions = body.versions || [];
		const rows = versions.slice().reverse().map((v) => {
			const tr = C.el("tr", v.version === body.in_effect ?
			    "current" : "");
			tr.dataset.version = String(v.version);
			tr.append(C.el("td", "version", v.version +
			    (v.version === body.in_effect ? " (in effect)" : "")),
			    C.el("td", "time", C.when(v.time)),
			    C.el("td", "author", v.author || "-"),
			    C.el("td", "comment", v.comment || ""),
			    C.el("td", "replaces", v.replaces || "-"),
			    C.el("td", "summary", v.summary || ""));
			return tr;
		});
		$("cfg-history").tBodies[0].replaceChildren(...rows);
		say("cfg-msg", versions.length + (versions.length === 1 ?
		    " version" : " versions") + " stored, the newest first.",
		    false);
		const last = versions.length ? versions[versions.length - 1]
		    .version : 0;
		const fresh = last !== newest;
		newest = last;
		options($("cfg-from"), Math.max(1, last - 1), fresh);
		options($("cfg-to"), last, fresh);
		if (!C.token())
			say("cfg-diff-msg", NEED_ADMIN + ": enter it in the " +
			    "Control center, then come back.", false);
		else if (versions.length > 1 && (fresh || $("cfg-diff").hidden))
			diff();
	}

	async function diff() {
		const from = $("cfg-from").value, to = $("cfg-to").value;
		const tb = $("cfg-diff").tBodies[0];
		if (!C.token()) {
			say("cfg-diff-msg", NEED_ADMIN + ": enter it in the " +
			    "Control center, then come back.", true);
			return;
		}
		if (!from || !to) return;
		let d;
		try {
			d = await C.api("/v1/config/diff?from=" +
			    encodeURIComponent(from) + "&to=" +
			    encodeURIComponent(to));
		} catch (e) {
			$("cfg-diff").hidden = true;
			if (e.status === 401 || e.status === 403)
				say("cfg-diff-msg", NEED_ADMIN + ", and the " +
				    "token this page has is not it (" + e.status +
				    "): enter the admin token in the Control " +
				    "center.", true);
			else
				say("cfg-diff-msg", "The changes could not be " +
				    "read: " + e.message, true);
			return;
		}
		tb.replaceChildren(...(d.changes || []).map((c) => {
			const tr = C.el("tr", "");
			tr.append(C.el("td", "section", c.section),
			    C.el("td", "key", c.key),
			    C.el("td", "from", c.secret ? "(a secret)" :
				c.from ?? "(not set)"),
			    C.el("td", "to", c.secret ? "(a secret: changed)" :
				c.to ?? "(not set)"));
			return tr;
		}));
		$("cfg-diff").hidden = !(d.changes || []).length;
		const restart = (d.restart || []).map((r) => r.server + " (" +
		    r.because + ")");
		say("cfg-diff-msg", "From version " + from + " to " + to + ": " +
		    ((d.changes || []).length ? (d.summary || d.changes.length +
			" changes") : "no change") + "." + (restart.length ?
		    " Needs a restart of " + restart.join(", ") + "." : ""),
		    false);
	}

	/* ---- services: live from the status ---- */

	function services(status) {
		if (!status) return;
		const list = status.services || [];
		const rows = list.map((s) => {
			const tr = C.el("tr", "");
			tr.dataset.service = s.name;
			tr.dataset.server = s.server;
			tr.append(C.el("td", "state svc-" + s.state, s.state +
			    (s.held ? " (held by an operator)" : "")),
			    C.el("td", "name", s.name),
			    C.el("td", "server", s.server),
			    C.el("td", "pid", s.pid || "-"),
			    C.el("td", "since", C.when(s.since)),
			    C.el("td", "restarts", s.restarts ?? 0),
			    C.el("td", "exit", s.last_exit || "-"),
			    C.el("td", "post", s.post ? s.post + " (owned by " +
				(s.post_owner || "nobody") + ")" : "(the " +
				"server's own)"),
			    C.el("td", "why", s.why || ""));
			return tr;
		});
		$("services").tBodies[0].replaceChildren(...rows);
		$("services-msg").textContent = list.length ? "" :
		    "No service is configured ([service NAME] sections).";
	}

	/* ---- links: the stream's server live, the others asked ---- */

	const links = {}; /* server -> {links} or {error} */

	function renderLinks() {
		const status = C.status();
		const rows = [], missing = [];
		const names = ((status && status.servers) || []).map(
		    (s) => s.name);
		for (const n of names) {
			const l = links[n];
			if (!l) continue;
			if (l.error) {
				missing.push(n + ": " + l.error);
				continue;
			}
			for (const k of l.links || []) {
				const tr = C.el("tr", "");
				tr.dataset.server = n;
				tr.dataset.link = k.link;
				tr.append(C.el("td", "state link-" + k.state,
				    (LINKS[k.state] || "?") + " " + k.state),
				    C.el("td", "server", n),
				    C.el("td", "link", k.link),
				    C.el("td", "target", k.target),
				    C.el("td", "since", C.when(k.since)),
				    C.el("td", "latency", typeof k.latency_ms ===
					"number" ? k.latency_ms + " ms" : "-"),
				    C.el("td", "detail", k.detail || ""),
				    C.el("td", "error", k.last_error ?
					k.last_error + " (" +
					C.when(k.last_error_at) + ")" : "-"));
				rows.push(tr);
			}
		}
		$("links").tBodies[0].replaceChildren(...rows);
		say("links-msg", missing.length ? "Not shown, the links of " +
		    "these servers (they did not answer): " +
		    missing.join("; ") + "." : "", missing.length > 0);
	}

	async function pollLinks() {
		for (const a of await C.each("/v1/links")) {
			const s = C.status();
			if (s && a.server === s.server && s.links) continue;
			links[a.server] = a.error ? { error: a.error } : a.body;
		}
		renderLinks();
	}

	function onStatus(status) {
		effect(status);
		services(status);
		if (status.links) {
			links[status.server] = { links: status.links };
			if (C.current() === "links") renderLinks();
		}
	}

	document.addEventListener("DOMContentLoaded", () => {
		C.addPage("config", () => {
			effect(C.status());
			history();
		}, onStatus);
		C.addPage("services", () => services(C.status()));
		C.addPage("links", C.whileShown("links", 3000, pollLinks));
		$("cfg-diff-show").addEventListener("click", diff);
	});
})();
