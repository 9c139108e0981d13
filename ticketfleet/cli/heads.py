"""`ticketfleet heads train|eval`: trained heads on the engine's own features (ticketfleet/engine/heads.py).

The model is the configured one (TICKETFLEET_MODEL, TICKETFLEET_MODEL_REVISION, TICKETFLEET_DEVICE, …,
built like every worker builds it); the heads read its hidden states, so they must be used with it.
Exit codes: 0 done; 1 some lines were rejected (the rest was used and the artifact written); 2 nothing
usable (a setting, the file, no field could be trained).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ticketfleet.cli.common import fail
from ticketfleet.core.errors import ConfigurationError, LineError

console = Console(stderr=True)
heads_app = typer.Typer(
    help="Trained heads: per-field classifiers on the engine's hidden states.", no_args_is_help=True
)

MAX_LISTED_ERRORS = 50


def _print_errors(errors: list[LineError]) -> None:
    for err in errors[:MAX_LISTED_ERRORS]:
        console.print(f"line {err.line}: {err.error}", markup=False, highlight=False)
    if len(errors) > MAX_LISTED_ERRORS:
        console.print(f"… and {len(errors) - MAX_LISTED_ERRORS} more rejected lines")


def _engine_featurizer() -> Any:
    """The configured engine (without any heads it may be set to use: training reads its features)."""
    from ticketfleet.core.settings import get_settings
    from ticketfleet.pipeline.heads_training import engine_featurizer
    from ticketfleet.pipeline.runtime import load_engine

    settings = get_settings().model_copy(update={"heads": None})
    with console.status(f"loading {settings.model}…"):
        try:
            engine = load_engine(settings)
        except ConfigurationError:
            raise
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot load the model {settings.model}: {exc}") from exc
    if not hasattr(engine, "thread_features"):
        raise ConfigurationError(
            f"the engine of {settings.engine_factory} has no thread_features: heads need the "
            "TransformersEngine's hidden states"
        )
    return engine_featurizer(engine, batch_size=settings.batch_size)


class _Bar:
    """A rich progress bar fed by the pipeline's ``progress(stage, done, total)`` callback."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        key = "training" if stage.startswith("training") else stage
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[key], completed=done, total=total, description=stage)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


@heads_app.command("train")
def train_command(
    data: Annotated[Path, typer.Argument(help="Labelled examples: JSONL or CSV (see docs/heads.md).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the heads to.")],
    fields: Annotated[
        str | None, typer.Option(help="Comma-separated fields to train (default: every labelled field).")
    ] = None,
    holdout: Annotated[
        float, typer.Option(min=0.01, max=0.9, help="Share of each label held out for calibration.")
    ] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the held-out split.")] = 0,
) -> None:
    """Train one head per field on DATA with the configured model's features and write them to --out."""
    from ticketfleet.pipeline.heads_training import load_labelled, save, select_fields, train_heads

    wanted = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    try:
        labelled = load_labelled(data)
        _print_errors(labelled.errors)
        if not labelled.examples:
            raise ConfigurationError(f"{data}: no usable labelled line")
        select_fields(labelled, wanted)  # fail on an unknown field before loading the model
        featurizer = _engine_featurizer()
        with _progress() as progress:
            result = train_heads(
                labelled, featurizer, fields=wanted, holdout=holdout, seed=seed, progress=_Bar(progress)
            )
        table = Table(title=f"heads on {len(labelled.examples)} examples ({featurizer.model_id})")
        for column in ("field", "labels", "train", "held out", "accuracy", "macro-F1", "ECE", "T"):
            table.add_column(column, justify="left" if column == "field" else "right")
        for report in result.fields:
            if not report.trained:
                continue
            m = report.metrics
            table.add_row(
                report.name,
                str(report.labels),
                str(m["train"]),
                str(m["heldout"]),
                _fmt(m["accuracy"]),
                _fmt(m["macro_f1"]),
                _fmt(m["ece"]),
                _fmt(m["temperature"]),
            )
        console.print(table)
        for report in result.fields:
            if not report.trained:
                console.print(f"[yellow]skipped {report.name}:[/] {report.message}", highlight=False)
        digest = save(result, out)
    except ConfigurationError as exc:
        raise fail(str(exc)) from exc
    console.print(
        f"wrote {out} (digest {digest}): {len(result.trained)} head(s); features "
        f"{result.featurise_seconds:.0f} s, training {result.train_seconds:.0f} s. "
        f"Use it with TICKETFLEET_HEADS={out}"
    )
    if labelled.errors:
        console.print(f"{len(labelled.errors)} line(s) rejected")
        raise typer.Exit(1)


@heads_app.command("eval")
def eval_command(
    data: Annotated[Path, typer.Argument(help="Labelled examples: JSONL or CSV.")],
    heads: Annotated[Path, typer.Option("--heads", help="A heads directory from `heads train`.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole report as JSON on stdout.")
    ] = False,
) -> None:
    """Measure trained heads on labelled DATA: accuracy, macro-F1, calibration, confidence thresholds."""
    from ticketfleet.engine.heads import HeadsArtifact
    from ticketfleet.pipeline.heads_eval import evaluate
    from ticketfleet.pipeline.heads_training import Featurizer, load_labelled

    try:
        artifact = HeadsArtifact.load(heads)
        labelled = load_labelled(data)
        _print_errors(labelled.errors)
        if not labelled.examples:
            raise ConfigurationError(f"{data}: no usable labelled line")
        featurizer = (
            _engine_featurizer()
            if artifact.manifest.features.hidden is not None
            else Featurizer(artifact.manifest.model_id, artifact.manifest.model_revision)
        )
        with _progress() as progress:
            report = evaluate(artifact, labelled, featurizer, progress=_Bar(progress))
    except ConfigurationError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        _print_report(report)
    if labelled.errors:
        raise typer.Exit(1)


def _print_report(report: Any) -> None:
    out = Console()
    summary = Table(title="heads on labelled data")
    for column in ("field", "items", "accuracy", "macro-F1", "ECE", "≥95% precision at", "≥98% precision at"):
        summary.add_column(column, justify="left" if column == "field" else "right")
    for name, e in report.fields.items():
        cells = []
        for t in e.thresholds:
            cells.append("unreached" if t.threshold is None else f"{t.threshold:.3f} ({t.coverage:.0%} kept)")
        summary.add_row(name, str(e.items), _fmt(e.accuracy), _fmt(e.macro_f1), _fmt(e.ece), *cells)
    out.print(summary)
    for name, e in report.fields.items():
        if e.confused:
            table = Table(title=f"{name}: most confused (true → predicted)")
            table.add_column("true")
            table.add_column("predicted")
            table.add_column("count", justify="right")
            for true, predicted, count in e.confused:
                table.add_row(true, predicted, str(count))
            out.print(table)
        labels = Table(title=f"{name}: per label")
        for column in ("label", "precision", "recall", "support"):
            labels.add_column(column, justify="left" if column == "label" else "right")
        for label, m in e.per_label.items():
            labels.add_row(label, _fmt(m["precision"]), _fmt(m["recall"]), str(m["support"]))
        out.print(labels)
        if e.unknown_labels:
            out.print(f"{name}: {e.unknown_labels} item(s) carry a label the head does not know")
    for name, why in report.skipped.items():
        out.print(f"skipped {name}: {why}")
    gates = report.gates()
    if gates:
        out.print("TICKETFLEET_GATES (review below the 95%-precision threshold, automatic from the 98% one):")
        print(f"TICKETFLEET_GATES='{report.gates_json()}'")
    others = [name for name in report.fields if name not in gates]
    for name in others:
        t = {x.precision: x.threshold for x in report.fields[name].thresholds}
        out.print(
            f"{name} (not a built-in field, no gate): 95% precision at {_fmt(t.get(0.95))}, "
            f"98% at {_fmt(t.get(0.98))}"
        )
