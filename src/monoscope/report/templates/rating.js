// Blind rating mode: the features of #monoscope-rating, one at a time, with only their top
// images and captions (from #monoscope-features). Marks persist in localStorage under the
// sample's key; "Export" downloads them as a monoscope-ratings JSON file (and shows it in
// #rt-json). #rating carries data-rated / data-total / data-pos for tests.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const box = $("monoscope-rating");
  if (!box) return;
  const sample = JSON.parse(box.textContent);
  const data = JSON.parse($("monoscope-features").textContent);
  const thumbs = JSON.parse($("monoscope-thumbs").textContent);
  const section = $("rating");
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
  const KEY = `monoscope-ratings:${sample.key}`;
  const N = sample.items.length;

  const load = () => {
    try {
      const s = JSON.parse(localStorage.getItem(KEY) || "{}");
      return { rater: s.rater || "", ratings: s.ratings || {}, pos: Number(s.pos) || 0 };
    } catch (e) {
      return { rater: "", ratings: {}, pos: 0 };
    }
  };
  const state = load();
  const save = () => {
    try {
      localStorage.setItem(KEY, JSON.stringify(state));
    } catch (e) {
      $("rt-status").textContent = "this browser does not keep ratings: export before leaving";
    }
  };

  const rated = () => sample.ids.filter((id) => state.ratings[id]).length;
  const status = () => {
    const n = rated();
    section.dataset.rated = String(n);
    section.dataset.total = String(N);
    section.dataset.pos = String(state.pos);
    $("rt-status").textContent = `${n} of ${N} rated`;
  };

  const show = () => {
    const pos = Math.max(0, Math.min(N - 1, state.pos));
    state.pos = pos;
    const i = sample.items[pos];
    const id = sample.ids[pos];
    const imgs = data.img[i] || [];
    const txts = data.txt[i] || [];
    $("rt-images").innerHTML = imgs.length
      ? imgs.map((p) => {
          const key = data.pairs[p][1];
          return key && thumbs[key]
            ? `<img src="${thumbs[key]}" width="96" height="96" alt="top image">`
            : `<span class="thumb-missing" role="img" aria-label="image unavailable">?</span>`;
        }).join("")
      : `<p class="muted small">Never active on an image.</p>`;
    $("rt-captions").innerHTML = txts.length
      ? txts.map((p) => `<li>${esc(data.pairs[p][0])}</li>`).join("")
      : `<li class="muted">Never active on a caption.</li>`;
    for (const b of section.querySelectorAll(".rt-choices button")) {
      b.setAttribute("aria-pressed", String(state.ratings[id] === b.dataset.label));
    }
    $("rt-progress").textContent = `feature ${pos + 1} of ${N}`;
    status();
  };

  const nextUnrated = (from) => {
    for (let k = 1; k <= N; k++) {
      const p = (from + k) % N;
      if (!state.ratings[sample.ids[p]]) return p;
    }
    return Math.min(from + 1, N - 1);
  };

  const rate = (label) => {
    state.ratings[sample.ids[state.pos]] = label;
    state.pos = nextUnrated(state.pos);
    save();
    show();
  };

  const start = () => {
    state.rater = $("rt-rater").value.trim() || state.rater;
    save();
    document.body.classList.add("rating-blind");
    $("rt-panel").hidden = false;
    if (state.ratings[sample.ids[state.pos]]) state.pos = nextUnrated(state.pos);
    show();
    section.scrollIntoView();
  };

  const exit = () => {
    document.body.classList.remove("rating-blind");
    $("rt-panel").hidden = true;
    status();
  };

  const exported = () => ({
    format: "monoscope-ratings",
    version: 1,
    rater: $("rt-rater").value.trim() || state.rater,
    sample: sample.key,
    seed: sample.seed,
    analysis: sample.analysis,
    labels: sample.labels,
    ratings: sample.ids.filter((id) => state.ratings[id]).map((id) => ({ feature: id, label: state.ratings[id] })),
    exported: new Date().toISOString(),
  });

  const exportFile = () => {
    const obj = exported();
    const text = JSON.stringify(obj, null, 1);
    $("rt-json").value = text;
    $("rt-json-box").open = true;
    const a = document.createElement("a");
    const who = (obj.rater || "rater").replace(/[^A-Za-z0-9_-]+/g, "_");
    a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
    a.download = `ratings-${who}.json`;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  };

  $("rt-rater").value = state.rater;
  $("rt-rater").addEventListener("change", () => { state.rater = $("rt-rater").value.trim(); save(); });
  $("rt-start").addEventListener("click", start);
  $("rt-exit").addEventListener("click", exit);
  $("rt-export").addEventListener("click", exportFile);
  $("rt-clear").addEventListener("click", () => {
    if (!window.confirm || window.confirm("Clear every rating of this sample in this browser?")) {
      state.ratings = {};
      state.pos = 0;
      save();
      if ($("rt-panel").hidden) status(); else show();
    }
  });
  $("rt-prev").addEventListener("click", () => { state.pos = Math.max(0, state.pos - 1); save(); show(); });
  $("rt-next").addEventListener("click", () => { state.pos = Math.min(N - 1, state.pos + 1); save(); show(); });
  for (const b of section.querySelectorAll(".rt-choices button")) {
    b.addEventListener("click", () => rate(b.dataset.label));
  }
  document.addEventListener("keydown", (e) => {
    if ($("rt-panel").hidden || e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA") return;
    const k = Number(e.key);
    if (k >= 1 && k <= sample.labels.length) rate(sample.labels[k - 1]);
    else if (e.key === "ArrowLeft") $("rt-prev").click();
    else if (e.key === "ArrowRight") $("rt-next").click();
    else if (e.key === "Escape") exit();
  });
  status();
})();
