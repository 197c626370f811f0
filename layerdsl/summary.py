"""Model summaries: a Keras-style table, and the same facts as JSON."""

from __future__ import annotations

from typing import Any

from .ir import Input, Model, Shape


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
    """A table like ``keras.Model.summary()``: Layer (type) | Output Shape | Param #.

    Graphs get Keras's "Connected to" column, and models built from blocks a
    "Block" column naming the block instance each layer came from.
    """
    graph = not model.is_sequential
    blocks = any(layer.block for layer in model.layers)
    header = ["Layer (type)", "Output Shape", "Param #"]
    if graph:
        header.append("Connected to")
    if blocks:
        header.append("Block")
    # Each row is a list of lines per cell; a merge lists one input per line, as Keras does.
    def input_row(model_input: Input) -> list[list[str]]:
        return [[f"{model_input.name} (InputLayer)"], [_shape(model_input.fed_shape)], ["0"], *[[""]] * (len(header) - 3)]

    rows: list[list[list[str]]] = [input_row(model.input)]
    later = [i for i in model.inputs[1:]]  # each listed where its chain starts, as written
    for layer in model.layers:
        while later and later[0].span is not None and later[0].span.line <= layer.span.line:
            rows.append(input_row(later.pop(0)))
        row = [[f"{layer.name} ({layer.keras_type})"], [_shape(layer.output_shape)], [f"{layer.params:,}"]]
        if graph:
            row.append(list(layer.inputs))
        if blocks:
            row.append([layer.block[-1] if layer.block else ""])
        rows.append(row)
    rows += [input_row(i) for i in later]
    widths = [max(len(header[i]), *(len(line) for r in rows for line in r[i])) + 3 for i in range(len(header))]
    total = sum(widths)

    def fmt(cells: list[str]) -> str:
        return (" " + "".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))).rstrip()

    lines = [f'Model: "{model.name}"', "_" * total, fmt(header), "=" * total]
    for i, row in enumerate(rows):
        for k in range(max(len(cell) for cell in row)):
            lines.append(fmt([cell[k] if k < len(cell) else "" for cell in row]))
        lines.append(("_" if i < len(rows) - 1 else "=") * total)
    lines.append(f"Total params: {model.total_params:,} ({_size(model.total_params)})")
    lines.append(f"Trainable params: {model.trainable_params:,} ({_size(model.trainable_params)})")
    lines.append(f"Non-trainable params: {model.non_trainable_params:,} ({_size(model.non_trainable_params)})")
    if len(model.inputs) > 1 or len(model.outputs) > 1:
        lines.append(f"Inputs: {', '.join(model.input_names)}")
        lines.append(f"Outputs: {', '.join(model.outputs)}")
    return "\n".join(lines)


def summary_dict(model: Model) -> dict[str, Any]:
    """The summary as plain data (what ``layerdsl summary --json`` prints)."""
    return {
        "name": model.name,
        "input_shape": list(model.input.fed_shape),
        "input_dtype": model.input.dtype,
        "input_layout": model.input.layout,
        "inputs": [
            {"name": i.name, "shape": list(i.fed_shape), "dtype": i.dtype, "layout": i.layout} for i in model.inputs
        ],
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
                "inputs": list(layer.inputs),
                "block": list(layer.block),
            }
            for layer in model.layers
        ],
        "total_params": model.total_params,
        "trainable_params": model.trainable_params,
        "non_trainable_params": model.non_trainable_params,
        "output": model.output_layer.name if model.layers else None,
        "outputs": list(model.outputs),
    }
