"""Pictures for reports: a task x task heat-map. matplotlib is optional (`pip install mtl[plots]`): without
it `AVAILABLE` is False and drawing says what to install."""
from pathlib import Path

from mtl.errors import MtlError

try:
    import matplotlib
    matplotlib.use("Agg")  # files only, never a window
    from matplotlib import pyplot
    AVAILABLE = True
except ImportError:  # an optional extra
    AVAILABLE = False


def heatmap(matrix: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Rows: the task whose step is taken; columns: the task whose loss changes. Red helps, blue hurts."""
    if not AVAILABLE:
        raise MtlError("drawing needs matplotlib: pip install matplotlib (or mtl[plots])")
    tasks = list(matrix)
    values = [[matrix[i][j] for j in tasks] for i in tasks]
    limit = max((abs(v) for row in values for v in row), default=1.0) or 1.0
    figure, axes = pyplot.subplots(figsize=(1.2 + 0.9 * len(tasks), 1.0 + 0.8 * len(tasks)))
    image = axes.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    axes.set_yticks(range(len(tasks)), tasks)
    axes.set_xlabel("loss of")
    axes.set_ylabel("step for")
    for row, line in enumerate(values):
        for column, value in enumerate(line):
            axes.text(column, row, f"{value:.3f}", ha="center", va="center", fontsize=8)
    axes.set_title(title)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path
