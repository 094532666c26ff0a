// Assign each thumbnail its data URI (stored once in #monoscope-thumbs), then record how many
// <img> elements decoded as data-images-ok="<ok>/<total>" on <body> (read by the tests).
(() => {
  const uris = JSON.parse(document.getElementById("monoscope-thumbs").textContent);
  for (const img of document.querySelectorAll("img[data-thumb]")) {
    const uri = uris[img.dataset.thumb];
    if (uri) img.src = uri;
  }
  const imgs = Array.from(document.images);
  Promise.allSettled(imgs.map((img) => img.decode())).then(() => {
    const ok = imgs.filter((img) => img.complete && img.naturalWidth > 0).length;
    document.body.dataset.imagesOk = `${ok}/${imgs.length}`;
  });
})();
