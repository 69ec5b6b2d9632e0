"""Terminal rendering with rich: persona cards, assignments, verification reports."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgepersona.sdk import Assignment, Manifest

__all__ = ["console", "print_assignments", "print_cards", "print_json", "progress_steps"]

console = Console(highlight=False)


def print_json(data: object) -> None:
    """Print machine-readable output (plain, no colour).

    Args:
        data: JSON-serialisable data.
    """
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def print_cards(manifest: Manifest) -> None:
    """Print every persona card of a manifest.

    Args:
        manifest: the verified manifest.
    """
    metrics = manifest.metrics
    console.print(f"[bold]{manifest.model_id}[/] v{manifest.version}: {metrics.k} personas from"
                  f" {metrics.n_users:,} users; silhouette {_fmt(metrics.silhouette)},"
                  f" Davies-Bouldin {_fmt(metrics.davies_bouldin)},"
                  f" stability (ARI) {_fmt(metrics.stability_ari)}")
    for card in manifest.personas:
        body = card.description + "\n" + "\n".join(f"  • {t.sentence}" for t in card.traits)
        console.print(Panel(body, title=f"[bold]{card.id} · {card.name}[/] ({card.share:.1%})",
                            title_align="left"))


def _fmt(value: float | None) -> str:
    """A metric or a dash."""
    return "-" if value is None else f"{value:.3f}"


def print_assignments(labels: Sequence[str], results: Sequence[Assignment],
                      title: str = "Assignments") -> None:
    """Print one row per assignment.

    Args:
        labels: one label per row (e.g. "user 1").
        results: the assignments.
        title: the table title.
    """
    table = Table(title=title, title_justify="left")
    for column in ("user", "persona", "name", "confidence", "model"):
        table.add_column(column, justify="right" if column in ("confidence", "model") else "left")
    for label, result in zip(labels, results, strict=True):
        shown = f"{result.confidence:.2f}" + ("" if result.determined else " (undetermined)")
        table.add_row(label, result.persona_id, result.name, shown, f"v{result.model_version}")
    console.print(table)


@contextmanager
def progress_steps(title: str, quiet: bool = False) -> Iterator[Callable[[str], None]]:
    """A live spinner whose text follows the trainer's progress messages.

    Args:
        title: what is running.
        quiet: print nothing (e.g. with ``--json``).

    Yields:
        A callback taking one progress message.
    """
    if quiet:
        yield lambda _msg: None
        return
    columns = (SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.fields[step]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(title, total=None, step="starting")

        def step(message: str) -> None:
            bar.update(task, step=message)
            bar.console.print(f"  {message}")

        try:
            yield step
        except BaseException:
            bar.live.transient = True  # erase the spinner line: the error is the last word
            raise
        bar.update(task, total=1, completed=1, step="done")
