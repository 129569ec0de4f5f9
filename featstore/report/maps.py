"""The report's maps of one feature set's test embeddings: PCA and t-SNE, coloured by one
attribute."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from featstore import store
from featstore.errors import StoreError
from featstore.report.plots import Panel, Panels, _figure, _style_axes

#: At most this many test images in the PCA and t-SNE maps (a seeded random sample).
MAX_MAP_POINTS = 2000
_TSNE_THREADED_FROM = 1000  # t-SNE on fewer points runs on one OpenMP thread


def map_points(
    store_path: str | os.PathLike[str],
    feature_set: str,
    color_by: str,
    *,
    max_points: int = MAX_MAP_POINTS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Test embeddings (float32, at most ``max_points`` rows, a seeded sample in image_id order)
    and the ``color_by`` labels of the same images. Uses the test split, or every split when the
    feature set has no test split."""
    manifest = store.feature_set_manifest(store_path, feature_set)
    splits = ["test"] if "test" in manifest.get("counts", {}).get("splits", {}) else None
    table = store.read_arrow(store_path, feature_set, splits=splits, attributes=[color_by])
    n = table.num_rows
    if n == 0:
        raise StoreError(f"feature set {feature_set!r} has no rows to map")
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        table = table.take(keep)
    emb = table["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    x = emb.astype(np.float32, copy=False).reshape(table.num_rows, -1)
    y = table[color_by].to_numpy(zero_copy_only=False).astype(bool)
    return x, y


def tsne_perplexity(n: int) -> float:
    """30 (the usual value) when there are enough points, else about n / 4 (at least 2):
    perplexity must stay well below the number of points."""
    return float(max(2.0, min(30.0, (n - 1) / 4)))


def pca_2d(x: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of the rows of ``x`` and the share of the rows'
    total variance each explains (``(n, 2)`` coordinates, ``(2,)`` ratios)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        raise ValueError(f"a map needs at least 3 points, got {len(x)}")
    if x.shape[1] == 1:
        return np.column_stack([x[:, 0] - x[:, 0].mean(), np.zeros(len(x))]), np.array([1.0, 0.0])
    pca = PCA(n_components=2, random_state=seed)
    return pca.fit_transform(x), np.asarray(pca.explained_variance_ratio_, dtype=float)


def embed_2d(x: np.ndarray, method: str, *, seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of ``x`` by ``"pca"`` or ``"tsne"`` (t-SNE runs on the first
    50 principal components when the dimension is larger)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        raise ValueError(f"a map needs at least 3 points, got {len(x)}")
    if method == "pca":
        return pca_2d(x, seed=seed)[0]
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        k = min(50, len(x))  # PCA cannot give more components than points
        if x.shape[1] > k:
            x = PCA(n_components=k, random_state=seed).fit_transform(x)
        tsne = TSNE(
            n_components=2,
            perplexity=tsne_perplexity(len(x)),
            init="pca",
            learning_rate="auto",
            random_state=seed,
        )
        # Barnes-Hut's OpenMP threads gain nothing on a few hundred points and spin badly on a
        # busy machine (60 points: 7.5 s with 2 threads on a loaded 2-core box, 0.2 s with 1)
        threads = 1 if len(x) < _TSNE_THREADED_FROM else None
        with threadpool_limits(limits=threads, user_api="openmp"):
            return tsne.fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def _draw_map(
    ax: Any, xy: np.ndarray, y: np.ndarray, color_by: str, xlabel: str, ylabel: str
) -> None:
    for value, color, label in ((False, "C0", f"not {color_by}"), (True, "C3", color_by)):
        m = y == value
        ax.scatter(
            xy[m, 0],
            xy[m, 1],
            s=8,
            alpha=0.6,
            color=color,
            label=f"{label} ({int(m.sum())})",
            linewidths=0,
        )
    ax.legend(fontsize=8, markerscale=2)
    _style_axes(ax, xlabel, ylabel)


def map_panels(
    x: np.ndarray, y: np.ndarray, *, feature_set: str, color_by: str, seed: int = 0
) -> Panels:
    """The PCA map (axes: the first two principal components, labelled with the share of the
    variance each explains) and the t-SNE map of embeddings ``x`` coloured by ``y``."""
    pca_xy, ratio = pca_2d(x, seed=seed)
    tsne_xy = embed_2d(x, "tsne", seed=seed)
    return Panels(
        "embedding_maps",
        (
            Panel(
                f"PCA of {feature_set}",
                lambda ax: _draw_map(
                    ax,
                    pca_xy,
                    y,
                    color_by,
                    f"PC 1 ({ratio[0]:.1%} of the variance)",
                    f"PC 2 ({ratio[1]:.1%} of the variance)",
                ),
            ),
            Panel(
                f"t-SNE of {feature_set} (perplexity {tsne_perplexity(len(x)):.0f})",
                lambda ax: _draw_map(ax, tsne_xy, y, color_by, "t-SNE 1", "t-SNE 2"),
            ),
        ),
        size=(5.6, 4.6),
    )


def plot_map(
    xy: np.ndarray, y: np.ndarray, *, title: str, color_by: str, xlabel: str = "", ylabel: str = ""
) -> Any:
    """Scatter of 2-D points coloured by a binary attribute."""
    fig, (ax,) = _figure(1, w=6.0, h=5.0)
    _draw_map(ax, xy, y, color_by, xlabel, ylabel)
    ax.set_title(title, fontsize=10)
    return fig
