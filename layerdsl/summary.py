"""Model summaries: a Keras-style table, and the same facts as JSON."""

from __future__ import annotations

from typing import Any

from .ir import Model, Shape


def _shape(shape: Shape) -> str:
    return "(" + ", ".join(["None", *(str(d) for d in shape)]) + ")"


def _size(params: int) -> str:
    size = params * 4.0  # float32
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
    raise AssertionError


def summary_text(model: Model) -> str:
    """A table like ``keras.Model.summary()``: Layer (type) | Output Shape | Param #."""
    rows = [(f"{layer.name} ({layer.keras_type})", _shape(layer.output_shape), f"{layer.params:,}") for layer in model.layers]
    rows.insert(0, ("input (InputLayer)", _shape(model.input.fed_shape), "0"))
    header = ("Layer (type)", "Output Shape", "Param #")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) + 3 for i in range(3)]
    total = sum(widths)

    def fmt(row: tuple[str, str, str]) -> str:
        return " " + row[0].ljust(widths[0]) + row[1].ljust(widths[1]) + row[2]

    lines = [f'Model: "{model.name}"', "_" * total, fmt(header), "=" * total]
    for i, row in enumerate(rows):
        lines.append(fmt(row))
        lines.append(("_" if i < len(rows) - 1 else "=") * total)
    lines.append(f"Total params: {model.total_params:,} ({_size(model.total_params)})")
    lines.append(f"Trainable params: {model.trainable_params:,} ({_size(model.trainable_params)})")
    lines.append(f"Non-trainable params: {model.non_trainable_params:,} ({_size(model.non_trainable_params)})")
    return "\n".join(lines)


def summary_dict(model: Model) -> dict[str, Any]:
    """The summary as plain data (what ``layerdsl summary --json`` prints)."""
    return {
        "name": model.name,
        "input_shape": list(model.input.fed_shape),
        "input_dtype": model.input.dtype,
        "input_layout": model.input.layout,
        "layers": [
            {
                "name": layer.name,
                "type": layer.keras_type,
                "kind": layer.kind,
                "output_shape": list(layer.output_shape),
                "params": layer.params,
                "trainable_params": layer.trainable_params,
                "line": layer.span.line,
                "column": layer.span.column,
                "source": layer.source,
            }
            for layer in model.layers
        ],
        "total_params": model.total_params,
        "trainable_params": model.trainable_params,
        "non_trainable_params": model.non_trainable_params,
    }
