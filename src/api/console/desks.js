/*
 * The Desks page (docs/console.md): every server's desk sessions (GET
 * /v1/desks on each), and the licenses in use against the limit.
 */
"use strict";

(function () {
	const C = window.understudyConsole;
	const $ = (id) => document.getElementById(id);
	const SHAPES = { online: "●", offline: "○" };

	function licenses(lic, sessions) {
		const p = $("lic");
		if (!lic) {
			p.textContent = "Licenses: no server answered.";
			p.className = "lic";
			return;
		}
		const used = lic.in_use;
		if (!lic.limit) {
			p.textContent = "Licenses: no limit set; " + sessions +
			    " live sessions on the servers that answered.";
			p.className = "lic";
			return;
		}
		p.textContent = "Licenses in use: " + (used === null ?
		    "unknown (the server is still reading them)" : used) +
		    " of " + lic.limit + " · policy " + lic.policy + " (" +
		    (lic.policy === "enforce" ? "a login past the limit is " +
			"refused" : "a login past the limit is let in, with " +
			"a warning") + ")";
		p.className = "lic" + (used !== null && used >= lic.limit ?
		    " over" : "");
		p.dataset.used = used === null ? "" : String(used);
		p.dataset.limit = String(lic.limit);
	}

	async function refresh() {
		const answers = await C.each("/v1/desks");
		const rows = [], missing = [];
		let lic = null, n = 0;
		for (const a of answers) {
			if (a.error) {
				missing.push(a.server + ": " + a.error);
				continue;
			}
			lic = lic || a.body.licenses;
			for (const s of a.body.sessions || []) {
				n++;
				const tr = C.el("tr", "");
				tr.dataset.desk = s.desk;
				tr.dataset.user = s.user;
				tr.append(C.el("td", "state desk-" + s.state,
				    (SHAPES[s.state] || "?") + " " + s.state),
				    C.el("td", "user", s.user),
				    C.el("td", "desk", s.desk),
				    C.el("td", "server", s.server),
				    C.el("td", "since", C.when(s.since)),
				    C.el("td", "seen", C.when(s.seen)),
				    C.el("td", "licensed", s.licensed ?
					"held" : "none"),
				    C.el("td", "version", s.version));
				rows.push(tr);
			}
		}
		$("desks").tBodies[0].replaceChildren(...rows);
		licenses(lic, n);
		const m = $("desks-msg");
		m.textContent = (n ? "" : "No desk is logged in. ") +
		    (missing.length ? "Not shown, the sessions of these " +
			"servers (they did not answer): " +
			missing.join("; ") + "." : "");
		m.className = "msg " + (missing.length ? "bad" : "");
	}

	document.addEventListener("DOMContentLoaded", () => {
		C.addPage("desks", C.whileShown("desks", 5000, refresh));
	});
})();
