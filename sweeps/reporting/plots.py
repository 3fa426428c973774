"""Pictures for MLflow and the report: a trial's confusion matrix, a study's Optuna plots.

matplotlib with the Agg backend: PNG files that the MLflow UI shows inline and that need no
browser, plotly or internet to open.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def confusion_png(matrix_csv: Path, out: Path, title: str) -> Path:
    """Heatmap of ``confusion_matrix.csv``, each cell with its count: scikit-learn's
    ``ConfusionMatrixDisplay`` for a single-label matrix (rows = true, columns = predicted); the
    multi-label table (TN/FP/FN/TP per label: not a square matrix, which that display needs)
    as a plain annotated heatmap."""
    from sklearn.metrics import ConfusionMatrixDisplay

    frame = pd.read_csv(matrix_csv, index_col=0)
    n_rows, n_cols = frame.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n_cols, 1.0 + 0.55 * n_rows), dpi=110)
    if frame.columns[0] != "TN":
        ConfusionMatrixDisplay(frame.values, display_labels=list(frame.columns)).plot(ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d")
    else:
        ax.imshow(frame.values, cmap="Blues")
        ax.set_xticks(range(n_cols), frame.columns)
        ax.set_yticks(range(n_rows), frame.index)
        ax.set_xlabel("count")
        ax.set_ylabel("label")
        top = frame.values.max() or 1
        for (i, j), value in np.ndenumerate(frame.values):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def confusion_png_bytes(matrix_csv: str, title: str) -> bytes:
    """``confusion_png`` of a matrix given as CSV text, as PNG bytes (what the MLflow logger's
    drawing process returns: sweeps.tracking.artifacts.Pictures)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "matrix.csv").write_text(matrix_csv)
        return confusion_png(Path(tmp) / "matrix.csv", Path(tmp) / "matrix.png", title).read_bytes()


def optuna_pngs(study: Any, folder: Path) -> dict[str, str]:
    """Optuna's own plots of a study (optimization history, parameter importance, parallel
    coordinates, slice) as PNGs in ``folder``. Returns {file name: why it is missing} for the
    plots Optuna could not draw (e.g. importance needs two finished trials)."""
    import optuna
    from optuna.visualization import matplotlib as ovm

    drawers: dict[str, Callable[[Any], Any]] = {
        "optimization_history.png": ovm.plot_optimization_history,
        "param_importances.png": ovm.plot_param_importances,
        "parallel_coordinate.png": ovm.plot_parallel_coordinate,
        "slice.png": ovm.plot_slice,
    }
    folder.mkdir(parents=True, exist_ok=True)
    missing: dict[str, str] = {}
    with warnings.catch_warnings():
        # Experimental-API notices, and small-study remarks (identical values, tight_layout).
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        for name, draw in drawers.items():
            try:
                axes = draw(study)
                fig = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
                fig.set_size_inches(max(fig.get_size_inches()[0], 7), max(fig.get_size_inches()[1], 4.5))
                fig.tight_layout()
                fig.savefig(folder / name, dpi=110)
                plt.close(fig)
            except Exception as exc:  # Optuna raises on studies it cannot plot (too few trials)
                missing[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                plt.close("all")
    return missing
