// The feature explorer: every alive feature lives in #monoscope-features as compact JSON and
// is rendered as a card only when its page is shown. Filters (group, text, MDS range), the
// sort and the page live in the URL hash (e.g. #group=TextD&q=face&mds=0.2-0.6&sort=mds), so
// a view can be bookmarked and shared. After each render, <body data-images-ok="ok/total">
// records how many <img> elements decoded, and #fx-cards carries data-shown / data-matching
// (read by the tests).
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  const data = JSON.parse($("monoscope-features").textContent);
  const thumbs = JSON.parse($("monoscope-thumbs").textContent);
  const C = data.cols;
  const N = C.id.length;
  const GROUPS = data.groups;
  const PAGE = data.page || 48;
  const [LOW, HIGH] = data.thresholds || [null, null];
  const [P95_IMG, P95_TXT] = data.p95 || [null, null];
  const col = (k, i) => (C[k] ? C[k][i] : null);
  const num = (x) => typeof x === "number" && Number.isFinite(x);
  const group = (i) => GROUPS[C.g[i]];

  // ---- formatting -------------------------------------------------------------------------
  const f3 = (x) => (num(x) ? x.toFixed(3) : "–");
  const f2 = (x) => (num(x) ? x.toFixed(2) : "–");
  const sig = (x) => (num(x) ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(3)) : "–");
  const pct = (x) => {
    if (!num(x)) return "–";
    const p = 100 * x;
    return (p === 0 ? "0" : p < 0.1 ? "<0.1" : p < 10 ? p.toFixed(1) : p.toFixed(0)) + "%";
  };

  // ---- sort keys --------------------------------------------------------------------------
  const mean2 = (a, b) => (num(a) && num(b) ? (a + b) / 2 : num(a) ? a : num(b) ? b : null);
  const ownModality = (i, img, txt) => {
    const g = group(i);
    return g === "ImgD" ? col(img, i) : g === "TextD" ? col(txt, i) : mean2(col(img, i), col(txt, i));
  };
  const KEYS = {
    coherence: (i) => (C.li || C.lt ? ownModality(i, "li", "lt") : ownModality(i, "ei", "et")),
    mds: (i) => C.mds[i],
    freq: (i) => Math.max(col("fi", i) ?? -1, col("ft", i) ?? -1),
    strength: (i) => Math.max(col("mi", i) ?? -1, col("mt", i) ?? -1),
    ei: (i) => col("ei", i),
    et: (i) => col("et", i),
    si: (i) => col("si", i),
    st: (i) => col("st", i),
    xc: (i) => col("xc", i),
    cf: (i) => col("cf", i),
    id: (i) => C.id[i],
  };
  const NEEDS = { coherence: ["ei", "et"], freq: ["fi", "ft"], strength: ["mi", "mt"],
    ei: ["ei"], et: ["et"], si: ["si"], st: ["st"], xc: ["xc"], cf: ["cf"] };

  // ---- search haystack (built on first use) ------------------------------------------------
  let hay = null;
  const haystack = () => {
    if (hay) return hay;
    hay = new Array(N);
    for (let i = 0; i < N; i++) {
      const parts = [data.name[i] || ""];
      for (const p of data.img[i]) parts.push(data.pairs[p][0]);
      for (const p of data.txt[i]) parts.push(data.pairs[p][0]);
      for (const [w] of data.words[C.id[i]] || []) parts.push(w);
      for (const [t] of (data.vocab && data.vocab[i]) || []) parts.push(t);
      hay[i] = parts.join("\n").toLowerCase();
    }
    return hay;
  };

  // ---- state <-> URL hash ----------------------------------------------------------------------
  const DEFAULT = { groups: [], unknown: [], q: "", min: 0, max: 1, sort: "coherence", desc: true, page: 0, feature: null };
  let state = { ...DEFAULT };
  const DEFAULT_DESC = (sort) => sort !== "id";

  const readHash = () => {
    const raw = decodeURIComponent(location.hash.slice(1));
    if (!raw.includes("=")) return false;
    const p = new URLSearchParams(location.hash.slice(1));
    const s = { ...DEFAULT };
    if (p.get("group")) {  // group names match in any case; unknown ones are reported
      const byLower = Object.fromEntries(GROUPS.map((g) => [g.toLowerCase(), g]));
      const asked = p.get("group").split(",").map((g) => g.trim()).filter(Boolean);
      s.groups = asked.map((g) => byLower[g.toLowerCase()]).filter(Boolean);
      s.unknown = asked.filter((g) => !byLower[g.toLowerCase()]);
    }
    s.q = p.get("q") || "";
    const m = /^([\d.]+)-([\d.]+)$/.exec(p.get("mds") || "");
    if (m) [s.min, s.max] = [Math.max(0, +m[1]), Math.min(1, +m[2])];
    if (p.get("sort") && KEYS[p.get("sort")]) s.sort = p.get("sort");
    s.desc = p.get("dir") ? p.get("dir") !== "asc" : DEFAULT_DESC(s.sort);
    s.page = Math.max(0, (parseInt(p.get("page"), 10) || 1) - 1);
    if (p.get("feature") && /^\d+$/.test(p.get("feature"))) s.feature = +p.get("feature");
    state = s;
    return true;
  };

  const writeHash = () => {
    const p = new URLSearchParams();
    if (state.feature !== null) p.set("feature", state.feature);
    if (state.groups.length) p.set("group", state.groups.join(","));
    if (state.q) p.set("q", state.q);
    if (state.min > 0 || state.max < 1) p.set("mds", `${state.min.toFixed(2)}-${state.max.toFixed(2)}`);
    if (state.sort !== DEFAULT.sort) p.set("sort", state.sort);
    if (state.desc !== DEFAULT_DESC(state.sort)) p.set("dir", state.desc ? "desc" : "asc");
    if (state.page > 0) p.set("page", state.page + 1);
    const hash = p.toString();
    try {
      history.replaceState(null, "", hash ? `#${hash}` : location.pathname + location.search);
    } catch (_) { /* file:// in some browsers: the view just is not bookmarkable */ }
  };

  // ---- filtering and sorting ---------------------------------------------------------------
  const matching = () => {
    const terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    const ids = terms.filter((t) => /^#\d+$/.test(t)).map((t) => +t.slice(1));
    const words = terms.filter((t) => !/^#\d+$/.test(t));
    const h = words.length ? haystack() : null;
    const groups = new Set(state.groups);
    const out = [];
    for (let i = 0; i < N; i++) {
      if (state.feature !== null) {
        if (C.id[i] === state.feature) out.push(i);
        continue;
      }
      if (groups.size && !groups.has(group(i))) continue;
      const mds = C.mds[i];
      if (num(mds) && (mds < state.min - 1e-9 || mds > state.max + 1e-9)) continue;
      if (ids.length && !ids.includes(C.id[i])) continue;
      if (h && !words.every((w) => h[i].includes(w))) continue;
      out.push(i);
    }
    const key = KEYS[state.sort] || KEYS.coherence;
    const k = new Float64Array(N);
    for (const i of out) {
      const v = key(i);
      k[i] = num(v) ? v : NaN;
    }
    const dir = state.desc ? -1 : 1;
    const cmp = (a, b) => {
      const x = k[a], y = k[b];
      if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) - Number.isNaN(y) || C.id[a] - C.id[b];
      return x === y ? C.id[a] - C.id[b] : (x < y ? -dir : dir);
    };
    out.sort(cmp);
    if (state.sort === "coherence") {
      // Rank within each group, then interleave the groups in proportion to their sizes, so
      // the first page shows the most coherent features of every group (not just of the
      // group whose modality happens to have the larger EmbSim scale).
      const seen = new Map(), size = new Map();
      for (const i of out) size.set(C.g[i], (size.get(C.g[i]) || 0) + 1);
      const q = new Float64Array(N);
      for (const i of out) {
        const r = seen.get(C.g[i]) || 0;
        seen.set(C.g[i], r + 1);
        // well-supported features first: undetermined and rare ones after every verdict
        q[i] = (Number.isNaN(k[i]) ? 2 + r : (r + 0.5) / size.get(C.g[i])) + (C.g[i] >= 3 ? 4 : 0);
      }
      out.sort((a, b) => q[a] - q[b] || C.g[a] - C.g[b]);
    }
    return out;
  };

  // ---- card rendering ----------------------------------------------------------------------
  const pctLeft = (x) => `${(100 * Math.min(1, Math.max(0, x))).toFixed(1)}%`;

  const histogram = (i) => {
    const H = data.hist;
    const a = H.img[i], b = H.txt[i];
    const max = Math.max(1, ...a, ...b);
    const scale = (c) => (c > 0 ? 2 + 19 * (Math.log1p(c) / Math.log1p(max)) : 0);
    const w = 120 / a.length;
    let bars = "";
    a.forEach((c, j) => {
      const h = scale(c);
      if (h) bars += `<rect class="hi" x="${(j * w + 0.6).toFixed(1)}" y="${(22 - h).toFixed(1)}" width="${(w - 1.2).toFixed(1)}" height="${h.toFixed(1)}"/>`;
    });
    b.forEach((c, j) => {
      const h = scale(c);
      if (h) bars += `<rect class="ht" x="${(j * w + 0.6).toFixed(1)}" y="23" width="${(w - 1.2).toFixed(1)}" height="${h.toFixed(1)}"/>`;
    });
    const sum = (v) => v.reduce((s, x) => s + x, 0);
    const label = `activation histogram: ${sum(a)} non-zero image and ${sum(b)} non-zero caption activations, from 0 to ${sig(H.hi[i])}`;
    const fi = col("fi", i), ft = col("ft", i);
    return `<figure class="hist"><div class="hl"><span class="lab li" title="fires on ${pct(fi)} of images">▲ images ${pct(fi)}</span><span class="ax" title="the bins span 0 to this value (at or at most a third above the largest activation)">0–${sig(H.hi[i])}</span></div>` +
      `<svg viewBox="0 0 120 45" preserveAspectRatio="none" role="img" aria-label="${esc(label)}"><line x1="0" x2="120" y1="22.5" y2="22.5"/>${bars}</svg>` +
      `<div class="hl"><span class="lab lt" title="fires on ${pct(ft)} of captions">▼ captions ${pct(ft)}</span></div></figure>`;
  };

  const stat = (label, value, title, cls = "") =>
    `<div class="${cls}"${title ? ` title="${esc(title)}"` : ""}><dt>${label}</dt><dd>${value}</dd></div>`;

  const above = (x, p95) => (num(x) && num(p95) && x > p95 ? "above" : "");

  const card = (i) => {
    const g = group(i);
    const id = C.id[i];
    const name = data.name[i];
    const mds = C.mds[i];
    const lo = col("lo", i), hi = col("hi", i);
    const imgs = data.img[i], imgv = data.imgv[i], txts = data.txt[i], txtv = data.txtv[i];
    const fallback = !name && txts.length ? data.pairs[txts[0]][0] : "";
    // vocabulary names (nearest texts to the feature's direction) title ImgD and unnamed features
    const voc = data.vocab ? data.vocab[i] : null;
    const byVocab = !!voc && (g === "ImgD" || !name);
    const title = byVocab ? voc[0][0] : name;
    let s = `<article class="card card-${g}" data-feature="${id}" data-group="${g}">`;
    s += `<header><div class="title"><a class="fid" href="#feature=${id}" title="link to this feature">#${id}</a>`;
    s += title
      ? `<h3 class="name" data-name-source="${byVocab ? "vocabulary" : "captions"}" title="${byVocab ? "vocabulary name: the text nearest to its direction" : "named from its top captions"}">${esc(title)}</h3>`
      : `<h3 class="name auto" title="no name; its top caption">${esc(fallback)}</h3>`;
    s += `</div><span class="pill pill-${g}">${g}</span></header>`;
    if (voc) {
      const mark = (on) => (on ? ` <i class="title-mark">(title)</i>` : "");
      s += `<p class="names"><span class="k">captions</span> ${esc(name || "–")}${mark(!byVocab && !!name)}`;
      s += ` · <span class="k">vocabulary</span> <span class="vocab">${voc.slice(0, 3).map(([t, c]) => `${esc(t)} <span class="muted">${f2(c)}</span>`).join(", ")}</span>${mark(byVocab)}</p>`;
    }
    s += `<div class="mdsrow"><span class="k">MDS</span> <b>${f3(mds)}</b>`;
    if (num(lo) && num(hi)) s += ` <span class="ci">95% CI ${f2(lo)}–${f2(hi)}</span>`;
    if (num(col("cf", i))) s += ` <span class="stab" title="confidence that its MDS lies in the ${g === "undetermined" || g === "rare" ? "most likely" : g} region">confidence ${pct(col("cf", i))}</span>`;
    if (num(col("q", i))) s += ` <span class="stab" title="BH-adjusted q-value of the sign-flip test">q ${sig(col("q", i))}</span>`;
    s += `</div><div class="gauge" aria-hidden="true">`;
    if (num(LOW)) s += `<i class="thr" style="left:${pctLeft(LOW)}"></i>`;
    if (num(HIGH)) s += `<i class="thr" style="left:${pctLeft(HIGH)}"></i>`;
    if (num(lo) && num(hi)) s += `<i class="band" style="left:${pctLeft(lo)};width:${pctLeft(hi - lo)}"></i>`;
    if (num(mds)) s += `<i class="mark" style="left:${pctLeft(mds)}"></i>`;
    s += `</div><div class="gauge-labels" aria-hidden="true"><span>text</span><span>image</span></div>`;
    s += `<div class="acts">${histogram(i)}<dl class="stats">`;
    s += stat("μ img", sig(col("mi", i)), "mean image activation");
    s += stat("μ txt", sig(col("mt", i)), "mean caption activation");
    if (C.xc) s += stat("x-corr", f2(col("xc", i)), "correlation of its image and caption activations over pairs");
    if (C.ei) s += stat("EmbSim img", f2(col("ei", i)), above(col("ei", i), P95_IMG) ? "above the 95th percentile of random image sets" : "mean pairwise cosine of its top images", above(col("ei", i), P95_IMG));
    if (C.et) s += stat("EmbSim txt", f2(col("et", i)), above(col("et", i), P95_TXT) ? "above the 95th percentile of random caption sets" : "mean pairwise cosine of its top captions", above(col("et", i), P95_TXT));
    if (C.si || C.st) s += stat("MS img / txt", `${f2(col("si", i))} / ${f2(col("st", i))}`, "MonoSemanticity score per modality");
    s += `</dl></div>`;
    s += `<h4>Top images</h4>`;
    if (imgs.length) {
      s += `<div class="thumbs">`;
      imgs.forEach((p, j) => {
        const [cap, key] = data.pairs[p];
        const tip = esc(`${cap} · ${sig(imgv[j])}`);
        s += key && thumbs[key]
          ? `<img src="${thumbs[key]}" width="64" height="64" alt="${esc(cap)}" title="${tip}" tabindex="0" data-cap="${tip}">`
          : `<span class="thumb-missing" title="${tip}" role="img" aria-label="${esc(cap)} (image unavailable)">?</span>`;
      });
      s += `</div><p class="thumb-cap">${esc(data.pairs[imgs[0]][0])} · ${sig(imgv[0])}</p>`;
    } else {
      s += `<p class="muted small">Never active on an image.</p>`;
    }
    s += `<h4>Top captions</h4>`;
    if (txts.length) {
      const vmax = Math.max(...txtv.filter(num), 1e-12);
      const li = (p, j) => `<li style="--frac:${pctLeft((txtv[j] || 0) / vmax)}"><span class="t">${esc(data.pairs[p][0])}</span><span class="v">${sig(txtv[j])}</span></li>`;
      s += `<ol class="captions">${txts.slice(0, 5).map(li).join("")}</ol>`;
      if (txts.length > 5) {
        s += `<details class="more"><summary>${txts.length - 5} more</summary><ol class="captions" start="6">${txts.slice(5).map((p, j) => li(p, j + 5)).join("")}</ol></details>`;
      }
    } else {
      s += `<p class="muted small">Never active on a caption.</p>`;
    }
    const words = (data.words[id] || []).filter(([, d]) => d > 0.005);
    if (words.length) {
      s += `<h4>Driving words</h4><div class="words">`;
      for (const [w, d] of words) s += `<span class="word" title="removing “${esc(w)}” lowers the activation by ${pct(d)} on average">${esc(w)} <b>−${pct(d)}</b></span>`;
      s += `</div>`;
    }
    return s + `</article>`;
  };

  // ---- page ---------------------------------------------------------------------------------
  const cards = $("fx-cards");
  const pagerButton = (page, label, current, disabled = false, aria = "") =>
    `<button type="button" data-page="${page}"${current ? ' aria-current="page" class="cur"' : ""}${disabled ? " disabled" : ""}${aria ? ` aria-label="${aria}"` : ""}>${label}</button>`;

  const pager = (pages) => {
    if (pages <= 1) return "";
    const cur = state.page;
    const shown = new Set([0, pages - 1, cur - 1, cur, cur + 1].filter((p) => p >= 0 && p < pages));
    let s = pagerButton(cur - 1, "‹", false, cur === 0, "previous page");
    let last = -1;
    for (const p of [...shown].sort((a, b) => a - b)) {
      if (p > last + 1) s += `<span class="gap">…</span>`;
      s += pagerButton(p, p + 1, p === cur);
      last = p;
    }
    return s + pagerButton(cur + 1, "›", false, cur === pages - 1, "next page");
  };

  const checkImages = () => {
    const imgs = Array.from(document.images);
    Promise.allSettled(imgs.map((img) => img.decode())).then(() => {
      const ok = imgs.filter((img) => img.complete && img.naturalWidth > 0).length;
      document.body.dataset.imagesOk = `${ok}/${imgs.length}`;
    });
  };

  const groupCounts = () => {
    const counts = { "": N };
    for (const g of GROUPS) counts[g] = 0;
    for (let i = 0; i < N; i++) counts[group(i)]++;
    for (const el of document.querySelectorAll("[data-count]")) el.textContent = counts[el.dataset.count].toLocaleString("en");
  };

  const syncControls = () => {
    for (const b of document.querySelectorAll(".chip")) {
      const g = b.dataset.group;
      b.setAttribute("aria-pressed", String(g ? state.groups.includes(g) : state.groups.length === 0));
    }
    if ($("fx-q") !== document.activeElement) $("fx-q").value = state.feature !== null ? `#${state.feature}` : state.q;
    $("fx-min").value = state.min;
    $("fx-max").value = state.max;
    $("fx-range-out").textContent = `${state.min.toFixed(2)} – ${state.max.toFixed(2)}`;
    $("fx-sort").value = state.sort;
    $("fx-dir").textContent = state.desc ? "↓" : "↑";
    $("fx-dir").setAttribute("aria-label", state.desc ? "sort descending" : "sort ascending");
    const filtered = state.groups.length || state.q || state.min > 0 || state.max < 1 || state.feature !== null;
    $("fx-reset").hidden = !filtered;
    drawRange();
  };

  let rangeBins = null;
  const drawRange = () => {
    const B = 40;
    if (!rangeBins) {
      rangeBins = GROUPS.map(() => new Array(B).fill(0));
      for (let i = 0; i < N; i++) {
        const m = C.mds[i];
        if (num(m)) rangeBins[C.g[i]][Math.min(B - 1, Math.floor(m * B))]++;
      }
    }
    const totals = rangeBins[0].map((_, j) => rangeBins.reduce((s, r) => s + r[j], 0));
    const max = Math.max(1, ...totals);
    const active = state.groups.length ? new Set(state.groups) : null;
    let s = `<svg viewBox="0 0 ${B} 20" preserveAspectRatio="none">`;
    for (let j = 0; j < B; j++) {
      let y = 20;
      const inside = (j + 1) / B > state.min + 1e-9 && j / B < state.max - 1e-9;
      GROUPS.forEach((g, gi) => {
        const h = (20 * rangeBins[gi][j]) / max;
        if (!h) return;
        y -= h;
        const dim = !inside || (active && !active.has(g));
        s += `<rect class="r-${g}${dim ? " dim" : ""}" x="${j + 0.08}" y="${y.toFixed(2)}" width="0.84" height="${h.toFixed(2)}"/>`;
      });
    }
    $("fx-hist").innerHTML = s + "</svg>";
  };

  let lastRender = 0;
  const render = () => {
    const t0 = performance.now();
    const list = matching();
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    const slice = list.slice(state.page * PAGE, (state.page + 1) * PAGE);
    cards.innerHTML = slice.length
      ? slice.map(card).join("")
      : `<p class="empty">No feature matches these filters.</p>`;
    const from = list.length ? state.page * PAGE + 1 : 0;
    $("fx-count").textContent = list.length === N
      ? `${N.toLocaleString("en")} features · ${from}–${from + slice.length - 1}`
      : `${list.length.toLocaleString("en")} of ${N.toLocaleString("en")} features match` + (list.length ? ` · ${from}–${from + slice.length - 1}` : "");
    if (state.unknown && state.unknown.length)
      $("fx-count").textContent += ` · ignored unknown group ${state.unknown.join(", ")} (groups: ${GROUPS.join(", ")})`;
    const p = pager(pages);
    $("fx-pager-top").innerHTML = p;
    $("fx-pager-bottom").innerHTML = p;
    cards.dataset.shown = String(slice.length);
    cards.dataset.matching = String(list.length);
    syncControls();
    writeHash();
    checkImages();
    lastRender = performance.now() - t0;
    cards.dataset.renderMs = lastRender.toFixed(1);
  };

  // ---- events -------------------------------------------------------------------------------
  let queued = false;
  const update = (changes, resetPage = true) => {
    Object.assign(state, changes);
    if (resetPage) state.page = 0;
    if (!("feature" in changes)) state.feature = null;
    if ("groups" in changes && !("unknown" in changes)) state.unknown = [];
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; render(); });
  };

  document.querySelector(".chips").addEventListener("click", (e) => {
    const b = e.target.closest(".chip");
    if (!b) return;
    const g = b.dataset.group;
    if (!g) return update({ groups: [] });
    const set = new Set(state.groups);
    set.has(g) ? set.delete(g) : set.add(g);
    update({ groups: set.size === GROUPS.length ? [] : GROUPS.filter((x) => set.has(x)) });
  });
  let typing = 0;
  $("fx-q").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => update({ q: e.target.value.trim() }), 120);
  });
  const onRange = (which) => (e) => {
    let v = +e.target.value;
    if (which === "min") v = Math.min(v, state.max);
    else v = Math.max(v, state.min);
    e.target.value = v;
    update({ [which]: v });
  };
  $("fx-min").addEventListener("input", onRange("min"));
  $("fx-max").addEventListener("input", onRange("max"));
  $("fx-sort").addEventListener("change", (e) => update({ sort: e.target.value, desc: DEFAULT_DESC(e.target.value) }));
  $("fx-dir").addEventListener("click", () => update({ desc: !state.desc }));
  $("fx-reset").addEventListener("click", () => update({ ...DEFAULT, sort: state.sort, desc: state.desc }));
  const onPager = (e) => {
    const b = e.target.closest("button[data-page]");
    if (!b || b.disabled) return;
    update({ page: +b.dataset.page, feature: state.feature }, false);
    if (e.currentTarget.classList.contains("bottom")) $("explorer").scrollIntoView({ behavior: "instant", block: "start" });
  };
  $("fx-pager-top").addEventListener("click", onPager);
  $("fx-pager-bottom").addEventListener("click", onPager);
  const showCaption = (e) => {
    const img = e.target.closest(".thumbs img");
    if (img) img.closest(".card").querySelector(".thumb-cap").textContent = img.dataset.cap;
  };
  cards.addEventListener("mouseover", showCaption);
  cards.addEventListener("focusin", showCaption);
  window.addEventListener("hashchange", () => {
    if (readHash()) {
      render();
      $("explorer").scrollIntoView({ behavior: "instant", block: "start" });
    }
  });

  // Hide sort options whose columns this analysis does not have.
  for (const opt of Array.from($("fx-sort").options)) {
    const needs = NEEDS[opt.value];
    if (needs && needs.every((k) => !C[k])) opt.remove();
  }
  if (!C.li && !C.lt && !C.ei && !C.et) DEFAULT.sort = "strength";
  state.sort = DEFAULT.sort;

  groupCounts();
  const linked = readHash();
  render();
  if (linked) requestAnimationFrame(() => $("explorer").scrollIntoView({ behavior: "instant", block: "start" }));
  document.body.dataset.ready = "1";
  document.body.dataset.readyMs = performance.now().toFixed(0);
})();
