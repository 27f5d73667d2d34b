/*
 * The understudy web console (docs/console.md). Plain JavaScript, no
 * framework. Rules: every value from the cluster goes into the page as
 * text (textContent, createElement), never as HTML; the token lives in
 * sessionStorage and travels only in the Authorization header.
 */
"use strict";

(function () {
	const TOKEN_KEY = "understudy.token";
	const BACKOFF_MIN = 250, BACKOFF_MAX = 4000, SILENCE_MS = 20000;
	const SHAPES = { up: "▲", down: "▼", stopped: "■", fenced: "!" };
	const PORTS = { idle: "○", busy: "●", returning: "◐" };

	const st = {
		origins: [location.origin], /* the servers' APIs, this one first */
		idx: 0,
		backoff: BACKOFF_MIN,
		abort: null,
		retry: null,
		lastId: null,
		lastData: 0,
		status: null,
		needToken: false,
	};

	const $ = (id) => document.getElementById(id);

	/* An element with text children only: strings become text nodes. */
	function el(tag, cls, ...kids) {
		const e = document.createElement(tag);
		if (cls) e.className = cls;
		for (const k of kids)
			e.append(k instanceof Node ? k : String(k ?? ""));
		return e;
	}

	function token() { return sessionStorage.getItem(TOKEN_KEY); }

	/* Keep t for this tab (null: forget it); the button says which. */
	function keep(t) {
		if (t) sessionStorage.setItem(TOKEN_KEY, t);
		else sessionStorage.removeItem(TOKEN_KEY);
		const b = $("forget-token");
		if (b) b.textContent = t ? "Change or forget the token" :
		    "Enter a token";
	}

	function setConn(text, cls) {
		const c = $("conn");
		c.textContent = text;
		c.className = "conn " + (cls || "");
	}

	/* ---- rendering: text only ---- */

	function serverState(s) {
		return (SHAPES[s.state] || "?") + " " + s.state;
	}

	function renderServers(status) {
		const tb = $("servers").tBodies[0];
		const rows = [];
		for (const s of status.servers || []) {
			const tr = el("tr", "");
			tr.dataset.server = s.name;
			tr.append(el("td", "state state-" + s.state, serverState(s)),
			    el("td", "name", s.name),
			    el("td", "rp", (s.route_points || []).join(", ") ||
				(s.spare ? "(spare)" : "-")),
			    el("td", "capacity", s.ports_in_use + " / " +
				s.max_media_ports + (s.spare ? "" :
				" (own post: " + s.media_ports + ")")),
			    el("td", "failover",
				(s.failover || []).join(" → ") || "-"),
			    el("td", "covers", (s.covers || []).join(", ") ||
				"-"));
			rows.push(tr);
		}
		tb.replaceChildren(...rows);
	}

	function portStrip(p) {
		const strip = el("span", "ports");
		for (const port of p.ports || []) {
			const sp = el("span", "port port-" + port.state,
			    PORTS[port.state] || "?");
			sp.dataset.port = String(port.number);
			sp.dataset.state = port.state;
			sp.title = port.number + ": " + port.state +
			    (port.server ? " on " + port.server : "");
			strip.append(sp);
		}
		return strip;
	}

	function renderPosts(status) {
		const tb = $("posts").tBodies[0];
		const rows = [];
		for (const p of status.posts || []) {
			const tr = el("tr", "");
			tr.dataset.post = p.name;
			const ports = el("td", "portcell", portStrip(p),
			    " " + p.ports_in_use + " of " + p.media_ports +
			    " busy");
			tr.append(el("td", "name", p.name),
			    el("td", "state post-" + p.state, p.state),
			    el("td", "owner", p.owner || "none"),
			    el("td", "cover", p.cover || "-"),
			    el("td", "reason", p.reason || ""), ports);
			rows.push(tr);
		}
		tb.replaceChildren(...rows);
	}

	function renderControl(status) {
		const tb = $("control").tBodies[0];
		const posts = {};
		for (const p of status.posts || []) posts[p.home] = p;
		const rows = [];
		for (const s of status.servers || []) {
			const tr = el("tr", "");
			tr.dataset.server = s.name;
			const p = posts[s.name];
			const acts = el("td", "actions");
			for (const a of ["start", "stop", "failback"]) {
				const b = el("button", "act-" + a,
				    a[0].toUpperCase() + a.slice(1));
				b.type = "button";
				if (a === "failback" &&
				    (!p || p.state !== "COVERED"))
					b.disabled = true;
				b.addEventListener("click",
				    () => confirmAction([[a, s.name]]));
				acts.append(b, " ");
			}
			tr.append(el("td", "state state-" + s.state,
			    serverState(s)), el("td", "name", s.name),
			    el("td", "post", p ? p.state + (p.owner ? " on " +
				p.owner : "") : "(spare)"), acts);
			rows.push(tr);
		}
		tb.replaceChildren(...rows);
	}

	function render(status) {
		st.status = status;
		$("cluster").textContent = status.cluster || "";
		$("via").textContent = status.server || "-";
		$("updated").textContent = new Date().toLocaleTimeString() +
		    (status.time ? " (server time " + status.time + ")" : "");
		renderServers(status);
		renderPosts(status);
		renderControl(status);
		learnOrigins(status);
		for (const f of statusHooks) f(status);
	}

	/* The other servers' APIs, in the order of the status, to go on through. */
	function learnOrigins(status) {
		const cur = st.origins[st.idx % st.origins.length];
		const list = [];
		for (const s of status.servers || []) {
			if (!s.address || !s.api_port) continue;
			const o = location.protocol + "//" + s.address + ":" +
			    s.api_port;
			if (!list.includes(o)) list.push(o);
		}
		if (!list.includes(location.origin))
			list.unshift(location.origin);
		st.origins = list;
		st.idx = Math.max(0, list.indexOf(cur));
	}

	/* ---- the event stream: fetch with the token, SSE parsed here ---- */

	function handleBlock(block) {
		let type = "message", id = null;
		const data = [];
		for (const line of block.split(/\r?\n/)) {
			if (line === "" || line[0] === ":") continue;
			const i = line.indexOf(":");
			const f = i < 0 ? line : line.slice(0, i);
			let v = i < 0 ? "" : line.slice(i + 1);
			if (v[0] === " ") v = v.slice(1);
			if (f === "event") type = v;
			else if (f === "data") data.push(v);
			else if (f === "id") id = v;
		}
		if (id !== null) st.lastId = id;
		if (type === "status" && data.length)
			render(JSON.parse(data.join("\n")));
		else if (data.length && eventHooks[type])
			for (const f of eventHooks[type])
				f(JSON.parse(data.join("\n")));
	}

	function stopStream() {
		if (st.abort) st.abort.abort();
		st.abort = null;
		clearTimeout(st.retry);
		st.retry = null;
	}

	function lost(origin, why) {
		st.idx = (st.idx + 1) % st.origins.length;
		const next = st.origins[st.idx];
		const wait = st.backoff;
		st.backoff = Math.min(st.backoff * 2, BACKOFF_MAX);
		setConn("Connection lost: " + why + ". Reconnecting through " +
		    next + " in " + (wait / 1000).toFixed(1) + " s.", "bad");
		st.retry = setTimeout(connect, wait);
	}

	async function connect() {
		stopStream();
		if (document.visibilityState === "hidden") {
			setConn("Paused while this tab is hidden.", "paused");
			return;
		}
		const origin = st.origins[st.idx % st.origins.length];
		const ctrl = new AbortController();
		st.abort = ctrl;
		const headers = { Accept: "text/event-stream" };
		if (token()) headers.Authorization = "Bearer " + token();
		if (st.lastId !== null) headers["Last-Event-ID"] = st.lastId;
		let why;
		try {
			const r = await fetch(origin + "/v1/events",
			    { headers, signal: ctrl.signal, cache: "no-store",
				referrerPolicy: "no-referrer" });
			if (r.status === 401 || r.status === 403) {
				st.needToken = true;
				setConn("The server refused to show the status (" +
				    r.status + "): it needs the read or admin " +
				    "token. Use the Control center's buttons " +
				    "to enter it.", "bad");
				return;
			}
			if (!r.ok) {
				let msg = "";
				try { msg = (await r.json()).message; } catch (e) {}
				throw new Error(origin + " answered " + r.status +
				    (msg ? " (" + msg + ")" : ""));
			}
			st.backoff = BACKOFF_MIN;
			st.lastData = Date.now();
			setConn("Live through " + origin + ".", "ok");
			const reader = r.body.getReader();
			const dec = new TextDecoder();
			let buf = "";
			for (;;) {
				const { value, done } = await reader.read();
				if (done) break;
				st.lastData = Date.now();
				buf += dec.decode(value, { stream: true });
				let m;
				while ((m = /\r?\n\r?\n/.exec(buf)) !== null) {
					handleBlock(buf.slice(0, m.index));
					buf = buf.slice(m.index + m[0].length);
				}
			}
			why = "the stream from " + origin + " ended";
		} catch (e) {
			if (ctrl.signal.aborted) return;
			why = e.message || String(e);
		}
		if (st.abort !== ctrl) return;
		st.abort = null;
		lost(origin, why);
	}

	/* a stream silent past its pings is dead even if TCP says nothing */
	setInterval(() => {
		if (st.abort && Date.now() - st.lastData > SILENCE_MS) {
			const o = st.origins[st.idx % st.origins.length];
			stopStream();
			lost(o, "nothing from " + o + " for " +
			    SILENCE_MS / 1000 + " s");
		}
	}, 2000);

	document.addEventListener("visibilitychange", () => {
		if (document.visibilityState === "hidden") {
			stopStream();
			setConn("Paused while this tab is hidden.", "paused");
		} else {
			connect();
		}
	});

	/* ---- control ---- */

	let pending = null;

	function confirmAction(actions) {
		pending = actions;
		const names = actions.map((a) => a[1]).join(", ");
		$("confirm-text").textContent = actions[0][0][0].toUpperCase() +
		    actions[0][0].slice(1) + " " + names + "?";
		$("confirm-cmd").textContent = actions.map((a) =>
		    "understudy " + a[0] + " " + a[1]).join("; ");
		$("confirm").showModal();
	}

	function askToken() {
		return new Promise((resolve) => {
			const d = $("token-dialog"), inp = $("token-input");
			inp.value = "";
			const done = (v) => {
				$("token-ok").onclick = $("token-cancel").onclick = null;
				d.close();
				resolve(v);
			};
			$("token-ok").onclick = () => done(inp.value.trim() || null);
			$("token-cancel").onclick = () => done(null);
			d.showModal();
			inp.focus();
		});
	}

	function say(text, cls) {
		const m = $("control-msg");
		m.textContent = text;
		m.className = "msg " + (cls || "");
	}

	async function act(action, name) {
		const origin = st.origins[st.idx % st.origins.length];
		const r = await fetch(origin + "/v1/servers/" +
		    encodeURIComponent(name) + "/" + action,
		    { method: "POST", cache: "no-store",
			referrerPolicy: "no-referrer",
			headers: { Authorization: "Bearer " + token() } });
		let body = {};
		try { body = await r.json(); } catch (e) {}
		const msg = body.message || body.error || "";
		if (r.ok)
			return [true, action + " " + name + ": accepted" +
			    (body.executed_by ? " (executed by " +
				body.executed_by + ")" : "") + "."];
		if (r.status === 401) {
			keep(null);
			return [false, action + " " + name + " refused (401 " +
			    "unauthorized): the server did not take that admin " +
			    "token. Enter the right one and try again."];
		}
		if (r.status === 503)
			return [false, action + " " + name + ": not done now (503" +
			    (r.headers.get("Retry-After") ? ", retry after " +
				r.headers.get("Retry-After") + " s" : "") +
			    "): " + msg + ". Try again."];
		return [false, action + " " + name + " failed (" + r.status +
		    (body.error ? " " + body.error : "") + "): " + msg];
	}

	async function runPending() {
		const actions = pending;
		pending = null;
		$("confirm").close();
		if (!actions) return;
		if (!token()) {
			const t = await askToken();
			if (!t) {
				say("Nothing done: no admin token given.", "bad");
				return;
			}
			keep(t);
			if (st.needToken) { st.needToken = false; connect(); }
		}
		const out = [];
		let ok = true;
		for (const [a, n] of actions) {
			let r;
			try { r = await act(a, n); }
			catch (e) { r = [false, a + " " + n + ": no answer (" +
			    e.message + ")"]; }
			ok = ok && r[0];
			out.push(r[1]);
		}
		say(out.join(" "), ok ? "ok" : "bad");
	}

	/* ---- pages: each a <section id="page-NAME"> with a nav-NAME button ---- */

	const shown = {}, statusHooks = [], eventHooks = {};
	let current = "status";

	function show(page) {
		current = page;
		for (const sec of document.querySelectorAll("main > section")) {
			const p = sec.id.replace(/^page-/, "");
			const nav = $("nav-" + p);
			sec.hidden = p !== page;
			if (!nav) continue;
			if (p === page) nav.setAttribute("aria-current", "page");
			else nav.removeAttribute("aria-current");
		}
		if (shown[page]) shown[page]();
	}

	/*
	 * A page of its own file: onShow runs when it is shown (and may
	 * fetch), onStatus with every status the stream brings.
	 */
	function addPage(name, onShow, onStatus) {
		if (onShow) shown[name] = onShow;
		if (onStatus) statusHooks.push(onStatus);
		const nav = $("nav-" + name);
		if (nav) nav.addEventListener("click", () => show(name));
	}

	/* fn(data) with every event of that type the stream brings */
	function onEvent(type, fn) {
		(eventHooks[type] = eventHooks[type] || []).push(fn);
	}

	/*
	 * A request through the first server of the cluster that answers,
	 * starting with the one the stream uses: the parsed JSON body (or
	 * the text, with opts.text). Throws an Error whose message is the
	 * words to show; err.status is the HTTP status where there was one.
	 */
	async function api(path, opts = {}) {
		const n = st.origins.length;
		let last = null;
		for (let i = 0; i < n; i++) {
			const origin = st.origins[(st.idx + i) % n];
			const headers = {};
			if (token()) headers.Authorization = "Bearer " + token();
			let r;
			try {
				r = await fetch(origin + path, { method:
				    opts.method || "GET", headers, cache:
				    "no-store", referrerPolicy: "no-referrer" });
			} catch (e) {
				last = new Error(origin + " did not answer (" +
				    (e.message || e) + ")");
				continue;
			}
			if (r.ok)
				return opts.text ? r.text() : r.json();
			let body = {};
			try { body = await r.json(); } catch (e) {}
			const err = new Error(path + ": " + r.status +
			    (body.error ? " " + body.error : "") +
			    (body.message ? ": " + body.message : ""));
			err.status = r.status;
			if (r.status === 401 || r.status === 403)
				err.message += " (enter the token with the " +
				    "Control center's buttons)";
			if (r.status < 500) throw err;
			last = err;
		}
		throw last || new Error("no server of the cluster answered");
	}

	/*
	 * The same GET from every server of the cluster at once (each has
	 * its own calls, desk sessions, links): [{server, body}] or
	 * [{server, error}] in the order of the status, each bounded by 3 s.
	 */
	async function each(path) {
		const list = (st.status && st.status.servers) || [];
		return Promise.all(list.map(async (s) => {
			const origin = location.protocol + "//" + s.address +
			    ":" + s.api_port;
			const headers = {};
			if (token()) headers.Authorization = "Bearer " + token();
			const ctrl = new AbortController();
			const t = setTimeout(() => ctrl.abort(), 3000);
			try {
				const r = await fetch(origin + path, { headers,
				    cache: "no-store", signal: ctrl.signal,
				    referrerPolicy: "no-referrer" });
				let body = {};
				try { body = await r.json(); } catch (e) {}
				if (r.ok) return { server: s.name, body };
				return { server: s.name, error: r.status +
				    (body.error ? " " + body.error : "") +
				    (body.message ? ": " + body.message : "") };
			} catch (e) {
				return { server: s.name, error: ctrl.signal.aborted ?
				    "no answer within 3 s" : "no answer (" +
				    (e.message || e) + ")" };
			} finally {
				clearTimeout(t);
			}
		}));
	}

	/* A time from the cluster (ISO 8601 or ms) as people read it, UTC. */
	function when(t) {
		if (t === null || t === undefined || t === "") return "-";
		const d = new Date(t);
		if (isNaN(d)) return String(t);
		return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
	}

	/* Run fn now and every ms while page is shown; onShow for addPage. */
	function whileShown(page, ms, fn) {
		let timer = null;
		return () => {
			clearInterval(timer);
			fn();
			timer = setInterval(() => {
				if (current !== page) clearInterval(timer);
				else if (document.visibilityState !== "hidden") fn();
			}, ms);
		};
	}

	function all(action) {
		const names = ((st.status && st.status.servers) || [])
		    .map((s) => s.name);
		if (names.length) confirmAction(names.map((n) => [action, n]));
	}

	document.addEventListener("DOMContentLoaded", () => {
		addPage("status");
		addPage("control");
		keep(token());
		$("confirm-yes").addEventListener("click", runPending);
		$("confirm-no").addEventListener("click", () => {
			pending = null;
			$("confirm").close();
		});
		$("start-all").addEventListener("click", () => all("start"));
		$("stop-all").addEventListener("click", () => all("stop"));
		$("forget-token").addEventListener("click", async () => {
			keep(null);
			const t = await askToken();
			keep(t);
			say(t ? "Token kept for this session." :
			    "Token forgotten.", "ok");
			connect();
		});
		connect();
	});

	/* for tests and tools: the renderer, fed a status object */
	/*
	 * For the pages in their own files, tests and tools: el() builds text
	 * only elements; api() asks the cluster; addPage() adds a page; the
	 * renderer is fed a status object.
	 */
	window.understudyConsole = { render, pause: stopStream, el, api, token,
		addPage, show, status: () => st.status,
		current: () => current, each, when, whileShown, onEvent };
})();
