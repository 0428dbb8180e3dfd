// etspipe view: draws the page from the JSON data embedded above it.
// Every string from results and annotations goes into the page through textContent or a DOM property,
// never as markup. Videos are drawn when they come near the viewport, so a 5,000-video page opens at once,
// and give their media player back when they are far from it (see media()).
(function () {
  "use strict";
  performance.mark("etspipe-start");
  const DATA = JSON.parse(document.getElementById("etspipe-data").textContent);
  performance.mark("etspipe-parsed");
  const VIDEOS = DATA.videos;
  const INDEX_STEP = 200;   // index rows added per "show more"
  const ROW_PX = 14;        // height of one heatmap row (one generated word)
  const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142], [31, 158, 137],
    [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37]];
  const NEAR = "300% 0px";  // a drawn video further than three viewport heights away releases its player
  const rendered = new Map();  // video index -> {section, update(t), redraw(), media}
  let filtered = VIDEOS.map((_, i) => i);
  let indexShown = 0;
  let haystacks = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function clock(s) {
    if (s === null || s === undefined || !isFinite(s)) return "?";
    const m = Math.floor(s / 60), r = s - 60 * m;
    return m + ":" + (r < 10 ? "0" : "") + r.toFixed(1);
  }
  function count(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(0) + "%"; }
  function colour(v) {  // v in [0, 1] -> "rgb(...)" along viridis
    const x = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(x));
    const f = x - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return "rgb(" + [0, 1, 2].map(c => Math.round(a[c] + f * (b[c] - a[c]))).join(",") + ")";
  }
  const LUT = Array.from({length: 256}, (_, q) => colour(q / 255));  // one colour string per 8-bit cell value
  function durationOf(v) {
    if (v.duration) return v.duration;
    const ends = v.preds.concat(v.refs).map(c => c.t[1]);
    return Math.max(1, ...ends);
  }

  // ---- header, metrics, index -------------------------------------------------------------------
  function header() {
    const nCaps = VIDEOS.reduce((n, v) => n + v.preds.length, 0);
    const nAtt = VIDEOS.reduce((n, v) => n + v.preds.filter(p => p.att).length, 0);
    const parts = [DATA.source, VIDEOS.length + " videos", nCaps + " captions"];
    if (DATA.has_refs) parts.push(VIDEOS.reduce((n, v) => n + v.refs.length, 0) + " references");
    if (nAtt) parts.push(nAtt + " with attention");
    parts.push("made " + DATA.generated + " by etspipe " + DATA.version);
    document.getElementById("meta").textContent = parts.join(" · ");
    const index = document.getElementById("index");
    if (!DATA.has_refs) index.classList.add("norefs");
    if (!nAtt) index.classList.add("noatt");
  }

  function metrics() {
    const m = DATA.metrics;
    if (!m) return;
    const box = document.getElementById("metrics");
    box.hidden = false;
    box.appendChild(el("h2", null, "Official metrics (x100)"));
    const table = el("table"), head = el("tr");
    m.columns.forEach((c, j) => head.appendChild(el("th", j ? "num" : null, c)));
    table.appendChild(el("thead")).appendChild(head);
    const body = table.appendChild(el("tbody"));
    m.rows.forEach(row => {
      const tr = body.appendChild(el("tr"));
      row.forEach((c, j) => tr.appendChild(el("td", j ? "num" : null,
        j === 0 ? c : (c === null ? "n/a" : Number(c).toFixed(2)))));
    });
    box.appendChild(table);
    if (m.note) box.appendChild(el("p", "meta", m.note));
  }

  function indexRow(i) {
    const v = VIDEOS[i], tr = el("tr"), td = el("td"), a = el("a", null, v.id);
    a.href = "#v-" + i;
    td.appendChild(a);
    tr.appendChild(td);
    tr.appendChild(el("td", "num", clock(v.duration)));
    tr.appendChild(el("td", "num", v.preds.length));
    tr.appendChild(el("td", "num refcol", v.refs.length));
    tr.appendChild(el("td", "num refcol", pct(v.scores["recall@0.5"])));
    tr.appendChild(el("td", "num attcol", v.preds.filter(p => p.att).length));
    return tr;
  }

  function renderIndex(reset) {
    const body = document.querySelector("#index-table tbody");
    if (reset) { body.textContent = ""; indexShown = 0; }
    const frag = document.createDocumentFragment();
    const stop = Math.min(filtered.length, indexShown + INDEX_STEP);
    for (let n = indexShown; n < stop; n++) frag.appendChild(indexRow(filtered[n]));
    body.appendChild(frag);
    indexShown = stop;
    const more = document.getElementById("more");
    more.hidden = indexShown >= filtered.length;
    more.textContent = "show " + Math.min(INDEX_STEP, filtered.length - indexShown) + " more of " +
      (filtered.length - indexShown) + " left";
    document.getElementById("count").textContent = filtered.length === VIDEOS.length
      ? VIDEOS.length + " videos" : filtered.length + " of " + VIDEOS.length + " videos match";
  }

  function search(query) {
    const q = query.trim().toLowerCase();
    if (q && !haystacks) {
      haystacks = VIDEOS.map(v => (v.id + "\n" + v.preds.map(p => p.s).join("\n") + "\n" +
        v.refs.map(r => r.s).join("\n")).toLowerCase());
    }
    filtered = [];
    VIDEOS.forEach((v, i) => {
      const hit = !q || haystacks[i].includes(q);
      if (hit) filtered.push(i);
      document.getElementById("v-" + i).hidden = !hit;
    });
    renderIndex(true);
  }

  // ---- one video --------------------------------------------------------------------------------
  function pack(items) {  // overlapping events go on separate lanes
    const lanes = [], ends = [];
    items.slice().sort((a, b) => a.t[0] - b.t[0]).forEach(it => {
      let l = ends.findIndex(e => e <= it.t[0]);
      if (l < 0) { l = ends.length; ends.push(0); lanes.push([]); }
      ends[l] = it.t[1];
      lanes[l].push(it);
    });
    return lanes;
  }

  function place(node, start, end, dur) {
    node.style.left = (100 * start / dur) + "%";
    node.style.width = (100 * Math.max(0, end - start) / dur) + "%";
  }

  function axis(dur) {
    const row = el("div", "axisrow"), track = el("div", "track axis");
    row.appendChild(el("div", "label", "time"));
    const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].find(s => dur / s <= 8) || 1200;
    for (let t = 0; t <= dur + 1e-9; t += step) {
      const tick = el("span", t === 0 ? "first" : (t + step > dur + 1e-9 && dur - t < step / 3 ? "last" : null),
        clock(t).replace(/\.0$/, ""));
      tick.style.left = (100 * t / dur) + "%";
      track.appendChild(tick);
    }
    track.appendChild(el("div", "playhead"));
    row.appendChild(track);
    return row;
  }

  function lanes(items, label, cls, dur, onClick) {
    const frag = document.createDocumentFragment();
    pack(items).forEach((lane, n) => {
      const row = el("div", "lane"), track = el("div", "track");
      row.appendChild(el("div", "label", n === 0 ? label : ""));
      lane.forEach(it => {
        const b = el("button", cls);
        b.type = "button";
        b.title = clock(it.t[0]) + "–" + clock(it.t[1]) + "  " + it.s;
        b.dataset.k = it.k;
        place(b, it.t[0], it.t[1], dur);
        if (onClick) b.addEventListener("click", () => onClick(it));
        it.node = b;
        track.appendChild(b);
      });
      track.appendChild(el("div", "playhead"));
      row.appendChild(track);
      frag.appendChild(row);
    });
    return frag;
  }

  function heatmap(att, seg, dur) {
    const nw = att.w.length, nr = att.rt.length;
    const bytes = Uint8Array.from(atob(att.q), c => c.charCodeAt(0));
    const box = el("div", "heat"), words = el("div", "words"), track = el("div", "track");
    att.w.forEach(w => words.appendChild(el("div", "word", w)));
    const canvas = el("canvas");
    canvas.dataset.words = nw;
    canvas.style.height = (nw * ROW_PX) + "px";
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", "attention over time, one row per generated word");
    const tip = el("div", "tip");
    track.appendChild(canvas);
    track.appendChild(tip);
    track.appendChild(el("div", "playhead"));
    box.appendChild(words);
    box.appendChild(track);
    // cell edges: half way between row centres, the outer ones at the segment's bounds (as the PNG plots)
    const t = att.rt, edges = [];
    if (nr === 1) edges.push(seg[0], seg[1] > seg[0] ? seg[1] : t[0] + 0.5);
    else {
      edges.push(Math.min(seg[0], t[0] - (t[1] - t[0]) / 2));
      for (let j = 1; j < nr; j++) edges.push((t[j - 1] + t[j]) / 2);
      edges.push(Math.max(seg[1], t[nr - 1] + (t[nr - 1] - t[nr - 2]) / 2));
    }
    function draw(width) {  // width: of the track, read once per video by the caller (one layout, not one each)
      const w = Math.max(1, width), dpr = window.devicePixelRatio || 1;
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(nw * ROW_PX * dpr);
      const ctx = canvas.getContext("2d"), sx = canvas.width / dur, sy = ROW_PX * dpr;
      ctx.fillStyle = "#e2e6ec";
      ctx.fillRect(seg[0] * sx, 0, Math.max(1, (seg[1] - seg[0]) * sx), canvas.height);
      for (let r = 0; r < nw; r++) {
        for (let j = 0; j < nr; j++) {
          ctx.fillStyle = LUT[bytes[r * nr + j]];
          const x0 = Math.floor(edges[j] * sx), x1 = Math.max(x0 + 1, Math.ceil(edges[j + 1] * sx));
          ctx.fillRect(x0, Math.round(r * sy), x1 - x0, Math.round((r + 1) * sy) - Math.round(r * sy));
        }
      }
    }
    canvas.addEventListener("mousemove", ev => {
      const rect = canvas.getBoundingClientRect(), time = (ev.clientX - rect.left) / rect.width * dur;
      const r = Math.min(nw - 1, Math.floor((ev.clientY - rect.top) / ROW_PX));
      const j = edges.findIndex((e, n) => n < nr && time >= e && time < edges[n + 1]);
      if (j < 0) { tip.style.display = "none"; return; }
      tip.textContent = att.w[r] + " · " + clock(time) + " · " + (bytes[r * nr + j] / 255 * att.max).toFixed(3);
      tip.style.left = Math.min(ev.clientX - rect.left, rect.width - 120) + "px";
      tip.style.display = "block";
    });
    canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
    const scale = el("div", "scale"), bar = el("i");
    bar.style.background = "linear-gradient(to right," + [0, .25, .5, .75, 1].map(colour).join(",") + ")";
    scale.appendChild(el("span", null, "attention 0"));
    scale.appendChild(bar);
    scale.appendChild(el("span", null, att.max.toFixed(3) + " (darker band: this event)"));
    const outer = el("div");
    outer.appendChild(box);
    const legend = el("div", "heat");
    legend.appendChild(el("div"));
    legend.appendChild(scale);
    outer.appendChild(legend);
    return {node: outer, draw: draw};
  }

  // A browser keeps only so many live media players (each holds a decoder and buffers), so a user who scrolls
  // through thousands of videos must not leave one alive per video passed. The <video> element stays (with
  // its caption track and listeners); only its src goes, and load() makes the browser free what it held.
  // The same video gets it back, at the time it was at, when it comes near again.
  function media(video, src) {
    let heldAt = null;  // playback time kept while released; null while the player is live
    return {
      get released() { return heldAt !== null; },
      release() {
        if (heldAt !== null) return;
        heldAt = video.currentTime || 0;
        video.pause();
        video.removeAttribute("src");
        video.load();
      },
      restore() {
        if (heldAt === null) return;
        const t = heldAt;
        heldAt = null;
        if (t > 0) video.addEventListener("loadedmetadata", () => { video.currentTime = t; }, {once: true});
        video.src = src;
      },
    };
  }
  const near = new IntersectionObserver(entries => entries.forEach(e => {
    const r = rendered.get(Number(e.target.dataset.i));
    if (r && r.media) { if (e.isIntersecting) r.media.restore(); else r.media.release(); }
  }), {rootMargin: NEAR});

  function player(v) {
    if (!v.src) {
      const ph = el("div", "placeholder");
      ph.appendChild(el("b", null, "No video: "));
      ph.appendChild(document.createTextNode(v.missing || "video file not available"));
      ph.appendChild(el("div", null, "Put " + v.id + ".mp4 (or .webm ...) in a folder given with --videos DIR " +
        "and rebuild the page to play it here."));
      return {node: ph, video: null, media: null};
    }
    const video = el("video");
    video.controls = true;
    video.preload = "metadata";
    video.src = v.src;  // already a URL (percent-encoded where the page was built)
    const track = el("track");
    track.kind = "captions";
    track.srclang = "en";
    track.label = "predicted captions";
    track.default = true;
    track.src = "data:text/vtt;charset=utf-8," + encodeURIComponent(v.vtt);
    video.appendChild(track);
    const box = el("div", "player");
    box.appendChild(video);
    return {node: box, video: video, media: media(video, v.src)};
  }

  function renderVideo(i) {
    if (rendered.has(i)) return rendered.get(i);
    const v = VIDEOS[i], section = document.getElementById("v-" + i), dur = durationOf(v);
    section.textContent = "";
    section.classList.remove("pending");
    const h = section.appendChild(el("h2", null, v.id));
    const facts = ["duration " + clock(v.duration), count(v.preds.length, "caption")];
    if (v.refs.length) facts.push(count(v.refs.length, "reference"));
    Object.keys(v.scores).forEach(k => facts.push(k + " " + (k.includes("tIoU") ? v.scores[k].toFixed(2)
      : (v.scores[k] <= 1 ? pct(v.scores[k]) : v.scores[k].toFixed(2)))));
    h.appendChild(el("small", null, facts.join(" · ")));
    const p = player(v);
    section.appendChild(p.node);
    const preds = v.preds.map((c, k) => ({t: c.t, s: c.s, k: k, c: c}));
    const seek = it => {
      if (p.video) {
        p.video.currentTime = it.t[0];
        const go = p.video.play();
        if (go && go.catch) go.catch(() => {});
      } else update(it.t[0]);
    };
    section.appendChild(axis(dur));
    section.appendChild(lanes(preds, "predicted", "ev", dur, seek));
    if (v.refs.length) {
      section.appendChild(lanes(v.refs.map((c, k) => ({t: c.t, s: c.s, k: k})), "reference", "ev ref", dur, null));
    }
    const list = section.appendChild(el("ol", "captions"));
    const draws = [];
    preds.slice().sort((a, b) => a.t[0] - b.t[0] || a.t[1] - b.t[1]).forEach(it => {
      const li = list.appendChild(el("li", "caption"));
      li.dataset.k = it.k;
      const head = li.appendChild(el("div", "cap-head"));
      const when = head.appendChild(el("button", "time", clock(it.t[0]) + "–" + clock(it.t[1])));
      when.type = "button";
      when.addEventListener("click", () => seek(it));
      head.appendChild(el("span", it.s.trim() ? "sentence" : "sentence none", it.s.trim() ? it.s : "(empty caption)"));
      if (it.c.ref !== undefined && v.refs[it.c.ref]) {
        const ref = head.appendChild(el("div", "ref-line"));
        ref.appendChild(el("span", "tiou", "reference (tIoU " + it.c.tiou.toFixed(2) + "): "));
        ref.appendChild(el("span", "ref-sentence", v.refs[it.c.ref].s));
      }
      if (it.c.att) {
        const hm = heatmap(it.c.att, it.t, dur);
        li.appendChild(hm.node);
        draws.push(hm.draw);
      }
      it.li = li;
    });
    if (!preds.length) list.appendChild(el("li", "empty", "no captions for this video"));
    const playheads = section.querySelectorAll(".playhead");
    function update(t) {
      section.classList.add("started");
      playheads.forEach(ph => { ph.style.left = (100 * Math.min(t, dur) / dur) + "%"; });
      preds.forEach(it => {
        const on = t >= it.t[0] && t < it.t[1];
        it.node.classList.toggle("playing", on);
        it.li.classList.toggle("playing", on);
      });
    }
    if (p.video) {
      const follow = () => { if (!p.media.released) update(p.video.currentTime); };  // released: time reads 0
      p.video.addEventListener("timeupdate", follow);
      p.video.addEventListener("seeked", follow);
    }
    const widthOf = section.querySelector(".heat .track");
    const state = {section: section, update: update, media: p.media,
      redraw: () => { if (draws.length) { const w = widthOf.clientWidth; draws.forEach(d => d(w)); } }};
    if (!rendered.size) performance.mark("etspipe-first-video");
    rendered.set(i, state);
    if (p.media) near.observe(section);
    state.redraw();
    return state;
  }

  // ---- page -------------------------------------------------------------------------------------
  function sections() {
    const main = document.getElementById("videos"), frag = document.createDocumentFragment();
    const seen = new IntersectionObserver(entries => entries.forEach(e => {
      if (e.isIntersecting) { seen.unobserve(e.target); renderVideo(Number(e.target.dataset.i)); }
    }), {rootMargin: "600px 0px"});
    VIDEOS.forEach((v, i) => {
      const s = el("section", "video pending");
      s.id = "v-" + i;
      s.dataset.i = i;
      s.dataset.video = v.id;
      s.appendChild(el("h2", null, v.id));
      frag.appendChild(s);
    });
    main.appendChild(frag);
    main.querySelectorAll("section.video").forEach(s => seen.observe(s));
  }

  header();
  metrics();
  sections();
  performance.mark("etspipe-sections");
  renderIndex(true);
  let timer = null;
  document.getElementById("search").addEventListener("input", ev => {
    clearTimeout(timer);
    timer = setTimeout(() => search(ev.target.value), 120);
  });
  document.getElementById("more").addEventListener("click", () => renderIndex(false));
  let resize = null;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => rendered.forEach(r => r.redraw()), 150);
  });
  if (location.hash.startsWith("#v-")) {
    const target = document.getElementById(location.hash.slice(1));
    if (target) { renderVideo(Number(target.dataset.i)); target.scrollIntoView(); }
  }
  performance.mark("etspipe-ready");
  window.etspipeView = {render: renderVideo, search: search, videos: VIDEOS};
})();
