"""The modality-specific steering case study (METHOD.md §6.3).

A concept comes from a text prompt (e.g. "woman", "red", "cat"). Its activations c are the
codes of the prompt's embedding, averaged with the mean image codes of the
``concept_images`` gallery images nearest to the prompt (so image-dominant features, which
rarely fire on text, get a say; 0 = the prompt alone). Restricted to a group G, the edit
direction is v_G = sum_{k in G} c_k d_k over the decoder directions d_k (for an SAE this is
the code-space edit decode(c_G) - decode(0) up to the input scale), scaled to unit norm so
every group moves the embedding equally far per unit of alpha:

    z' = z + alpha * v_G / ||v_G||        (re-normalised when the store is)

For sources sampled from the store (captions not mentioning the concept), per group and alpha:
target-concept gain (cosine to the prompt minus that at alpha = 0; share of sources whose
nearest gallery item mentions the concept) vs source preservation (cosine to the source; rank
of the source's own item in the gallery; share still retrieving it first).

Renders, per example source: nearest gallery images (``steer_neighbours_*.png``), images from
the small embedding-conditioned decoder (``steer_decoded_*.png``, image sources; trained on
the fly unless ``decoder`` is given) and, optionally, a diffusers Stable unCLIP pipeline
(``steer_unclip_*.png``; it needs a store embedded with that pipeline's own CLIP image
encoder). Writes ``steer.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import torch

from .._util import MonoscopeError, versions, write_json
from ..analysis.monosemanticity import mean_ci, unit_rows
from ..artefacts import STUDY_VERSION
from ..config import ALPHAS, SteerConfig
from ..encoders import DualEncoder
from ..featuremaps import FeatureMap
from ..report.plots import MPL_STYLE
from ..store import MODALITIES, Store
from ._common import concept_pattern, load_pixels, open_inputs, save_png

STEER_GROUPS = ("ImgD", "TextD", "CrossD", "all")


def steering_directions(
    fmap: FeatureMap, concept: torch.Tensor, masks: dict[str, np.ndarray]
) -> dict[str, torch.Tensor | None]:
    """Unit edit direction per group from the concept's (K,) activations (None if the concept
    has no active feature in the group)."""
    dirs = fmap.decoder_directions()
    if dirs is None:
        raise MonoscopeError(
            f"steering needs decoder directions; feature map '{fmap.kind}' has none"
        )
    dirs = dirs.to(concept)
    out: dict[str, torch.Tensor | None] = {}
    for g, mask in masks.items():
        v = (concept * torch.from_numpy(mask).to(concept)) @ dirs
        norm = v.norm()
        out[g] = v / norm if norm > 0 else None
    return out


def steer(
    z: torch.Tensor, direction: torch.Tensor, alphas: Sequence[float], normalize: bool = True
) -> torch.Tensor:
    """(A, n, d) edits z + alpha * direction of (n, d) embeddings for every alpha."""
    a = torch.as_tensor(list(alphas), dtype=z.dtype, device=z.device)
    edited = z[None] + a[:, None, None] * direction
    return unit_rows(edited) if normalize else edited


def steer_study(
    store: str | Path | Store,
    featuremap: str | Path | FeatureMap,
    analysis: str | Path | None,
    out: str | Path,
    *,
    model: str | DualEncoder | None = None,
    concept: str = "woman",
    modality: str = "image",
    alphas: Sequence[float] = ALPHAS,
    n_sources: int = 64,
    concept_images: int = 16,
    examples: int = 2,
    max_gallery: int = 20000,
    decoder: str | Path | None = None,
    render_decoder: bool = True,
    decoder_epochs: int = 15,
    unclip: str | None = None,
    unclip_steps: int = 20,
    unclip_norm: float | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Run the steering study; returns the path of ``out/steer.json`` (see module docstring).

    ``modality``: which embeddings are edited (``image`` or ``text`` sources). ``decoder``: a
    directory from ``monoscope decoder train`` (default: train one into ``out/decoder``, or
    reuse a compatible one there); ``render_decoder=False`` skips it. ``unclip``: a diffusers
    ``StableUnCLIPImg2ImgPipeline`` id or directory; ``unclip_norm`` rescales the embeddings
    to that norm before it (unCLIP expects unnormalised CLIP image embeddings).
    """
    given = dict(locals())  # the call, recorded in the output
    out = Path(out)
    if modality not in MODALITIES:
        raise MonoscopeError(f"--modality must be one of {MODALITIES}, not {modality!r}")
    if not concept.strip():
        raise MonoscopeError("--concept must be a non-empty prompt")
    if not alphas or n_sources < 1:
        raise MonoscopeError("need at least one --alphas value and --sources >= 1")
    inp = open_inputs(
        store, featuremap, analysis, out, model=model, device=device, seed=seed, progress=progress
    )
    fmap = inp.fmap
    pairs = inp.store.pairs()
    rng = np.random.default_rng(seed)
    captions = np.array([p.get("caption", "") for p in pairs], dtype=object)
    pattern = concept_pattern(concept)
    mentions = np.array([bool(pattern.search(c)) for c in captions])
    candidates = np.flatnonzero(~mentions)
    if candidates.size == 0:
        raise MonoscopeError(f"every caption mentions {concept!r}; no sources to steer")
    sources = rng.choice(candidates, min(n_sources, candidates.size), replace=False)
    n = inp.store.count
    others = np.setdiff1d(np.arange(n), sources)
    rest = rng.permutation(others)[: max(max_gallery - sources.size, 0)]
    gallery = np.concatenate([sources, np.sort(rest)])  # sources first: source i is gallery i

    gallery_img = unit_rows(inp.rows("image", gallery))
    gallery_src = gallery_img if modality == "image" else unit_rows(inp.rows("text", gallery))
    z = inp.rows(modality, sources)
    t_c = inp.texts([concept])
    with torch.inference_mode():
        c = fmap.encode(t_c, "text")[0].float()
        if concept_images > 0:
            top = (gallery_img @ unit_rows(t_c)[0]).topk(min(concept_images, len(gallery))).indices
            c_img = fmap.encode(inp.rows("image", gallery[top.cpu().numpy()]), "image")
            c = (c + c_img.float().mean(0)) / 2
    masks = {**inp.masks(with_all=True)}
    directions = steering_directions(fmap, c, masks)

    concept_unit = unit_rows(t_c)[0]
    source_unit = unit_rows(z)
    hits = torch.from_numpy(mentions[gallery])
    own = torch.arange(len(sources), device=z.device)
    groups_out: dict[str, Any] = {}
    nearest: dict[str, np.ndarray] = {}
    edited: dict[str, torch.Tensor] = {}
    base_sim = source_unit @ concept_unit
    for g in STEER_GROUPS:
        active = (c > 0).cpu().numpy() & masks[g]
        entry: dict[str, Any] = {
            "n_concept_features": int(active.sum()),
            "concept_mass": float(c[torch.from_numpy(masks[g])].sum()),
        }
        direction = directions[g]
        if direction is None:
            entry["note"] = "the concept has no active feature in this group"
            groups_out[g] = entry
            continue
        with torch.inference_mode():
            zs = steer(z, direction, alphas, normalize=inp.normalized)
            zu = unit_rows(zs)
            sim_concept = zu @ concept_unit  # (A, n)
            sim_source = (zu * source_unit).sum(-1)
            sims = zu @ gallery_src.T  # (A, n, G)
            own_sim = sims[:, own, own]
            rank = (sims > own_sim[..., None]).sum(-1)
            nn = (zu @ gallery_img.T).argmax(-1)  # nearest gallery image, any source modality
        edited[g] = zs.cpu()
        nearest[g] = gallery[nn.cpu().numpy()]
        entry["per_alpha"] = [
            {
                "alpha": float(a),
                "concept_similarity": mean_ci(sim_concept[i].cpu().numpy(), seed=seed),
                "concept_gain": mean_ci((sim_concept[i] - base_sim).cpu().numpy(), seed=seed),
                "concept_nn_rate": mean_ci(hits[nn[i].cpu()].numpy(), seed=seed),
                "source_cosine": mean_ci(sim_source[i].cpu().numpy(), seed=seed),
                "source_rank": mean_ci(rank[i].cpu().numpy(), seed=seed),
                "source_top1": mean_ci((rank[i] == 0).cpu().numpy(), seed=seed),
            }
            for i, a in enumerate(alphas)
        ]
        groups_out[g] = entry

    result: dict[str, Any] = {
        "format_version": STUDY_VERSION,
        "concept": concept,
        "modality": modality,
        "alphas": [float(a) for a in alphas],
        "n_sources": int(len(sources)),
        "gallery_size": int(len(gallery)),
        "concept_features": _concept_features(c, inp.groups),
        "groups": groups_out,
        "paper_finding": _verdict(groups_out),
    }
    ex = np.arange(min(examples, len(sources)))
    result["examples"] = [
        {
            "row": int(sources[i]),
            "caption": str(captions[sources[i]]),
            "nearest": {g: [str(captions[r]) for r in nearest[g][:, i]] for g in nearest},
        }
        for i in ex
    ]
    figures = []
    for i in ex:
        figures.append(
            _plot_neighbours(
                out / f"steer_neighbours_{i}.png",
                pairs,
                sources[i],
                nearest,
                int(i),
                alphas,
                concept,
                modality,
            )
        )
    if edited and render_decoder and modality == "image":
        dec, info = _decoder(decoder, inp.store, out, decoder_epochs, inp.device, seed, progress)
        result["decoder"] = info
        from .decoder import decode

        for i in ex:
            cells = {g: _to_uint8(decode(dec, e[:, i].to(inp.device))) for g, e in edited.items()}
            figures.append(
                _plot_rendered(
                    out / f"steer_decoded_{i}.png",
                    pairs,
                    sources[i],
                    cells,
                    alphas,
                    concept,
                    "decoder",
                )
            )
    elif render_decoder and modality != "image":
        result["decoder"] = {"note": "the decoder renders image embeddings only"}
    if edited and unclip:
        pipe = load_unclip(unclip, inp.device)
        for i in ex:
            cells = {
                g: render_unclip(pipe, e[:, i], steps=unclip_steps, seed=seed, norm=unclip_norm)
                for g, e in edited.items()
            }
            figures.append(
                _plot_rendered(
                    out / f"steer_unclip_{i}.png",
                    pairs,
                    sources[i],
                    cells,
                    alphas,
                    concept,
                    "unCLIP",
                )
            )
    result["figures"] = [f.name for f in figures]
    result["settings"] = {
        "options": SteerConfig.record(given, "store", "featuremap", "analysis", "out", "model"),
        "store": str(inp.store.path.resolve()),
        "analysis": str(inp.analysis.resolve()),
        "concept_images": concept_images,
        "direction": "unit-norm sum of the concept's decoder directions within the group, "
        "weighted by its activations",
        "renormalized": inp.normalized,
        "unclip": unclip,
        "seed": seed,
        "versions": versions(),
    }
    return write_json(out / "steer.json", result)


def _concept_features(c: torch.Tensor, groups: np.ndarray, top: int = 8) -> dict[str, Any]:
    act = c.cpu().numpy()
    out: dict[str, Any] = {}
    for g in ("ImgD", "TextD", "CrossD"):
        idx = np.flatnonzero((groups == g) & (act > 0))
        idx = idx[np.argsort(-act[idx])][:top]
        out[g] = [{"feature": int(k), "activation": float(act[k])} for k in idx]
    return out


def _verdict(groups: dict[str, Any]) -> dict[str, Any]:
    """The paper: TextD edits give stronger semantic control, ImgD edits keep more of the
    reference image. Compared here at the largest alpha."""
    last = {g: e["per_alpha"][-1] for g, e in groups.items() if "per_alpha" in e}
    if "ImgD" not in last or "TextD" not in last:
        note = "needs concept features in both ImgD and TextD"
        return {"note": note, "verdict": f"not measurable: {note}"}
    gain = {g: v["concept_gain"]["mean"] for g, v in last.items()}
    keep = {g: v["source_cosine"]["mean"] for g, v in last.items()}
    rank = {g: v["source_rank"]["mean"] for g, v in last.items()}
    by_cosine = _above(last["ImgD"]["source_cosine"], last["TextD"]["source_cosine"])
    by_rank = _above(last["TextD"]["source_rank"], last["ImgD"]["source_rank"])  # lower: kept
    if by_cosine == by_rank:
        preserve = by_cosine
    elif "holds" in (by_cosine, by_rank):
        preserve = f"partly: by {'cosine' if by_cosine == 'holds' else 'rank'} only"
    else:
        preserve = f"by cosine: {by_cosine}; by rank: {by_rank}"
    return {
        "TextD_edits_control_semantics_more": {
            "criterion": "at the largest alpha, TextD edits gain more of the concept than ImgD "
            "edits (95% CIs apart)",
            "verdict": _above(last["TextD"]["concept_gain"], last["ImgD"]["concept_gain"]),
        },
        "ImgD_edits_preserve_the_source_more": {
            "criterion": "at the largest alpha, ImgD edits keep the source closer than TextD "
            "edits, by cosine and by gallery rank (95% CIs apart)",
            "verdict": preserve,
        },
        "criterion": "at the largest alpha: concept gain (TextD vs ImgD); source preservation "
        "(ImgD vs TextD) by cosine to the source and by the source's gallery rank",
        "concept_gain": gain,
        "source_cosine": keep,
        "source_rank": rank,
        "TextD_stronger_semantic_control": gain["TextD"] > gain["ImgD"],
        "ImgD_preserves_source_more_by_cosine": keep["ImgD"] > keep["TextD"],
        "ImgD_preserves_source_more_by_rank": rank["ImgD"] < rank["TextD"],
    }


def _above(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Verdict that mean ``a`` exceeds mean ``b`` (two ``mean_ci`` results)."""
    if a.get("mean") is None or b.get("mean") is None:
        return "not measurable"
    if a["mean"] <= b["mean"]:
        return "does not hold"
    apart = a.get("ci") and b.get("ci") and a["ci"][0] > b["ci"][1]
    return "holds" if apart else "direction only: the 95% CIs overlap"


def _decoder(
    path: str | Path | None,
    store: Store,
    out: Path,
    epochs: int,
    device: str,
    seed: int,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    """Load the given decoder, reuse a compatible one in ``out/decoder``, or train one."""
    from .decoder import load_decoder, train_decoder

    trained = False
    if path is None:
        path = out / "decoder"
        config = path / "config.json"
        reusable = False
        if config.is_file():
            old = load_decoder(path, device).config
            reusable = old.get("store") == str(store.path.resolve()) and old.get("epochs") == epochs
        if not reusable:
            train_decoder(store, path, epochs=epochs, seed=seed, device=device, progress=progress)
            trained = True
    dec = load_decoder(path, device)
    if dec.config.get("dim") != store.dim or dec.config.get("model") != store.manifest.get("model"):
        raise MonoscopeError(
            f"{path}: the decoder was trained on embeddings of another model or dimension "
            f"({dec.config.get('model')}, {dec.config.get('dim')}-d)"
        )
    return dec, {
        "path": str(Path(path).resolve()),
        "trained_here": trained,
        "final": dec.config.get("final"),
    }


def load_unclip(spec: str, device: str = "cpu") -> Any:
    """A diffusers ``StableUnCLIPImg2ImgPipeline`` from a hub id or directory (lazy import)."""
    try:
        from diffusers import StableUnCLIPImg2ImgPipeline
    except ImportError:
        raise MonoscopeError(
            "rendering with unCLIP needs the optional 'diffusers' package (pip install 'monoscope[diffusers]')"
        ) from None
    try:
        pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(spec)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MonoscopeError(f"{spec}: cannot load a Stable unCLIP pipeline ({first})") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def render_unclip(
    pipe: Any,
    emb: torch.Tensor,
    *,
    steps: int = 20,
    seed: int = 0,
    norm: float | None = None,
    prompt: str = "",
    guidance_scale: float = 1.0,
) -> np.ndarray:
    """(B, H, W, 3) uint8 images generated from (B, d) image embeddings by unCLIP."""
    expected = int(pipe.image_normalizer.mean.shape[-1])
    if emb.shape[-1] != expected:
        raise MonoscopeError(
            f"the unCLIP pipeline expects {expected}-d image embeddings but the store has "
            f"{emb.shape[-1]}-d ones; embed the data with the pipeline's own CLIP image encoder"
        )
    if norm is not None:
        emb = unit_rows(emb) * norm
    param = next(pipe.unet.parameters())
    images = pipe(
        prompt=[prompt] * len(emb),
        image_embeds=emb.to(param.device, param.dtype),
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    ).images
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def _to_uint8(pixels: torch.Tensor) -> np.ndarray:
    return (pixels.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()


def _source_panel(ax: Any, pairs: list[dict[str, Any]], row: int, modality: str) -> None:
    caption = pairs[row].get("caption", "")
    if modality == "image":
        ax.imshow(load_pixels(pairs, np.array([row]), 64)[0], interpolation="nearest")
    else:
        ax.text(0.5, 0.5, caption[:40], ha="center", va="center", wrap=True, fontsize=7)
    ax.set_title(f"source\n{caption[:22]}", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(
    cells: dict[str, list[tuple[np.ndarray, str]]],
    pairs: list[dict[str, Any]],
    row: int,
    modality: str,
    alphas: Sequence[float],
    title: str,
) -> Any:
    from matplotlib.figure import Figure

    names = list(cells)
    with mpl.rc_context(MPL_STYLE):
        fig = Figure(
            figsize=(1.25 * (len(alphas) + 1) + 0.3, 1.35 * len(names) + 0.6), layout="constrained"
        )
        axes = fig.subplots(len(names), len(alphas) + 1, squeeze=False)
        for r, g in enumerate(names):
            for col in range(len(alphas) + 1):
                ax = axes[r][col]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if col == 0:
                    if r == 0:
                        _source_panel(ax, pairs, row, modality)
                    else:
                        ax.axis("off")
                    continue
                image, label = cells[g][col - 1]
                ax.imshow(image, interpolation="nearest")
                ax.set_xlabel(label[:20], fontsize=6)
                if r == 0:
                    ax.set_title(f"alpha {alphas[col - 1]:g}", fontsize=8)
            axes[r][1].set_ylabel(g, fontsize=9)
        fig.suptitle(title, fontsize=10)
    return fig


def _plot_neighbours(
    path: Path,
    pairs: list[dict[str, Any]],
    row: int,
    nearest: dict[str, np.ndarray],
    i: int,
    alphas: Sequence[float],
    concept: str,
    modality: str,
) -> Path:
    cells = {}
    for g, nn in nearest.items():
        images = load_pixels(pairs, nn[:, i], 64)
        cells[g] = [
            (im, pairs[r].get("caption", "")) for im, r in zip(images, nn[:, i], strict=True)
        ]
    title = f"steer {modality} toward '{concept}': nearest gallery image per group and alpha"
    return save_png(_grid(cells, pairs, row, modality, alphas, title), path)


def _plot_rendered(
    path: Path,
    pairs: list[dict[str, Any]],
    row: int,
    images: dict[str, np.ndarray],
    alphas: Sequence[float],
    concept: str,
    renderer: str,
) -> Path:
    cells = {g: [(im, "") for im in ims] for g, ims in images.items()}
    title = f"steer image toward '{concept}': {renderer} renders per group and alpha"
    return save_png(_grid(cells, pairs, row, "image", alphas, title), path)
