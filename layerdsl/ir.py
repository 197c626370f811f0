"""The checked, typed IR: what every backend reads.

Shapes leave out the batch axis and are channels-last, as in Keras. The IR
never holds framework objects; it is plain frozen data with source spans.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import Span
from .values import Args, Shape, Weight

#: The name by which layers refer to the model input in ``Layer.inputs``.
INPUT_NAME = "input"


@dataclass(frozen=True)
class Layer:
    kind: str  # registry key, e.g. "conv2d"
    name: str  # unique in the model, Keras-style default ("conv2d_1")
    args: Args
    input_shape: Shape
    output_shape: Shape
    weights: tuple[Weight, ...]
    span: Span
    source: str  # canonical DSL spelling of the statement, safe for comments
    keras_type: str  # Keras class name, for summaries ("Conv2D")
    input_masked: bool = False  # a Keras mask arrives with the input (embedding mask_zero, masking)
    output_masked: bool = False  # the output carries a mask on to the next layer
    #: Names of the layers whose outputs this layer reads (``"input"`` is the model input);
    #: one name for ordinary layers, several for merges (add, concat, ...), two for cross-attention
    #: (the query, then the memory its keys and values come from).
    inputs: tuple[str, ...] = ()
    #: The block call chain this layer came from, outermost first (block instance names).
    block: tuple[str, ...] = ()
    #: The block definitions of that chain, one per instance (``("stage", "conv_bn")``).
    block_defs: tuple[str, ...] = ()
    #: For merges and cross-attention, the shape of each input, in order.
    input_shapes: tuple[Shape, ...] = ()
    #: The statement as written, before a block's parameters were bound (``conv2d filters k``);
    #: equal to ``source`` outside blocks. Safe for comments, like ``source``.
    written: str = ""

    @property
    def params(self) -> int:
        return sum(w.size for w in self.weights)

    @property
    def trainable_params(self) -> int:
        return sum(w.size for w in self.weights if w.trainable)


# --- structure: what the source says, kept for backends that write one class per block ---


@dataclass(frozen=True)
class BlockDef:
    """A `block NAME PARAM... KEY=DEFAULT... { body }` definition."""

    name: str
    params: tuple[str, ...]  # required parameters, in order
    defaults: Args  # optional parameters with their default values (Python values)
    span: Span  # the block's name in its definition

    @property
    def signature(self) -> tuple[str, ...]:
        """Every parameter in call order: the required ones, then those with defaults."""
        return (*self.params, *self.defaults)


@dataclass(frozen=True)
class LayerNode:
    """One layer of the model, in the order the checker made it."""

    layer: Layer

    @property
    def span(self) -> Span:
        return self.layer.span


@dataclass(frozen=True)
class BlockCall:
    """One instance of a block: its bound arguments and what its body made."""

    block: str  # the definition's name
    instance: str  # the instance's full name, the prefix of its layers' names ("stage_conv_bn_1")
    args: Args  # every parameter of the definition, bound (defaults filled), Python values
    span: Span  # the call statement
    input: str  # the tensor the block reads (a layer name, or INPUT_NAME)
    output: str  # the tensor it returns
    body: tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    """`repeat N { body }`: each iteration's nodes, in order (the body run N times)."""

    count: int
    span: Span
    input: str
    output: str
    iterations: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True)
class Tap:
    """`tap NAME`: the tensor named ``tensor`` is known as ``@NAME`` from here on."""

    name: str
    tensor: str
    span: Span


Node = LayerNode | BlockCall | Repeat | Tap


def walk(nodes: tuple[Node, ...]) -> Iterator[Node]:
    """Every node, depth first, in source order (block bodies and repeat iterations included)."""
    for node in nodes:
        yield node
        if isinstance(node, BlockCall):
            yield from walk(node.body)
        elif isinstance(node, Repeat):
            for body in node.iterations:
                yield from walk(body)


def layers_of(nodes: tuple[Node, ...]) -> tuple[Layer, ...]:
    """The flat per-layer view of a structure."""
    return tuple(node.layer for node in walk(nodes) if isinstance(node, LayerNode))


@dataclass(frozen=True)
class Input:
    shape: Shape  # channels-last, without the batch axis
    dtype: str
    layout: str  # how callers feed Keras/NumPy models: channels_last or channels_first
    span: Span | None
    declared: bool  # False when the shape came from the first layer's `in=`
    #: The tensor's name: what ``Layer.inputs`` and ``@name`` call it (INPUT_NAME for the first by default).
    name: str = INPUT_NAME

    @property
    def fed_shape(self) -> Shape:
        """The shape a caller passes to Keras and NumPy models (without batch)."""
        if self.layout == "channels_first" and len(self.shape) >= 2:
            return (self.shape[-1], *self.shape[:-1])
        return self.shape


@dataclass(frozen=True)
class Model:
    name: str  # a Python identifier
    input: Input
    layers: tuple[Layer, ...]
    filename: str = "<string>"
    source_text: str = field(default="", repr=False, compare=False)
    #: The layer whose output is the model's output (the last one, unless the model ends on `@tap`).
    output: str = ""
    #: Block definitions, in source order.
    blocks: tuple[BlockDef, ...] = ()
    #: The structure the layers came from: layers, block instances, repeats and taps in source
    #: order. ``layers`` is its flat view (``layers_of(body) == layers``); empty for models made
    #: without the checker (importers build flat models).
    body: tuple[Node, ...] = field(default=(), repr=False, compare=False)
    #: What the checker warns about (``errors.LayerCheckWarning``), in source order.
    warnings: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    #: Every model input, in declared order (``input`` is the first); empty means ``(input,)``.
    inputs: tuple[Input, ...] = ()
    #: The model's outputs (layer names), in declared order; empty means ``(output,)``, or the last layer.
    outputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.inputs:
            object.__setattr__(self, "inputs", (self.input,))
        if not self.outputs:
            last = self.output or (self.layers[-1].name if self.layers else "")
            object.__setattr__(self, "outputs", (last,) if last else ())
        elif not self.output:
            object.__setattr__(self, "output", self.outputs[0])

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    def tensor_shape(self, name: str) -> Shape:
        """The shape of a tensor: a model input's, or a layer's output."""
        for model_input in self.inputs:
            if model_input.name == name:
                return model_input.shape
        return self.layer(name).output_shape

    @property
    def output_shapes(self) -> tuple[Shape, ...]:
        return tuple(self.tensor_shape(name) for name in self.outputs) or (self.input.shape,)

    def block(self, name: str) -> BlockDef:
        return next(b for b in self.blocks if b.name == name)

    @property
    def output_layer(self) -> Layer:
        return self.layer(self.output) if self.output else self.layers[-1]

    @property
    def output_shape(self) -> Shape:
        return self.output_layer.output_shape if self.layers else self.input.shape

    @property
    def is_sequential(self) -> bool:
        """True when every layer reads the one before it and the last layer is the output."""
        if len(self.inputs) > 1 or len(self.outputs) > 1:
            return False
        previous = self.input.name
        for layer in self.layers:
            if layer.inputs not in ((), (previous,)):
                return False
            previous = layer.name
        return not self.output or self.output == previous

    @property
    def total_params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable_params for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def layer(self, name: str) -> Layer:
        return self._by_name[name]

    @functools.cached_property
    def _by_name(self) -> dict[str, Layer]:
        return {layer.name: layer for layer in self.layers}

    def _repr_html_(self) -> str:
        """Jupyter shows the summary table and the diagram."""
        from .graph import model_html

        return model_html(self)

    def weight_names(self) -> list[str]:
        """Canonical weight keys, ``"<layer>.<param>"``, in model order."""
        return [f"{layer.name}.{w.name}" for layer in self.layers for w in layer.weights]
