"""The block planner: instances of a block become one definition, correct for every instance."""

from layerdsl import codegen, ir, parse
from layerdsl.backends.structure import Fragment, Scope, self_contained, unify, unify_iterations


def _fragment(write):
    with codegen.holes() as holes:
        text = write()
    return Fragment.of(text, holes)


def _conv(in_channels, filters, kernel, stride, pads, name):
    return _fragment(lambda: "\n".join([
        f"self.pad = {codegen.call('nn.ZeroPad2d', pads)}",
        f"self.conv = {codegen.call('nn.Conv2d', codegen.Hint(in_channels, 'in_channels'), filters, kernel, stride=stride)}",
        f"self.bn = {codegen.call('nn.BatchNorm2d', filters, eps=0.001)}",
        f"name = {codegen.py(name + '_conv')}",
    ]))


def _scope(in_channels, filters, k, stride, name):
    return Scope({"filters": filters, "k": k, "stride": stride, "in_channels": in_channels}, {"stride": 1}, name)


def test_holes_that_follow_a_parameter_become_it_and_constants_stay_literals():
    instances = [_conv(3, 32, (3, 3), (2, 2), (0, 1, 0, 1), "stem"), _conv(32, 64, (3, 3), (1, 1), (1, 1, 1, 1), "b1")]
    scopes = [_scope(3, 32, 3, 2, "stem"), _scope(32, 64, 3, 1, "b1")]
    [variant] = unify(instances, scopes)
    assert "nn.Conv2d(in_channels, filters, (3, 3), stride=(stride, stride))" in variant.text
    assert "nn.BatchNorm2d(filters, eps=0.001)" in variant.text
    # The pads depend on the input size, which the block does not know: an argument of its own.
    assert "nn.ZeroPad2d(pads)" not in variant.text and "nn.ZeroPad2d(value)" in variant.text
    assert 'name = name + "_conv"' in variant.text and variant.uses_name
    assert [p.name for p in variant.parameters] == ["filters", "in_channels", "value", "stride"]
    assert variant.call_arguments(0) == ([32, 3, (0, 1, 0, 1)], {"stride": 2})
    assert variant.call_arguments(1) == ([64, 32, (1, 1, 1, 1)], {})


def test_each_instance_gets_back_exactly_its_code():
    def write(in_channels, filters, kernel, stride, pads, name):
        return _fragment(lambda: "(" + ", ".join([
            codegen.call("f", pads),
            codegen.call("f", codegen.Hint(in_channels, "in_channels"), filters, kernel, stride=stride, bias=False),
            codegen.call("f", name + "_conv", 0.5),
        ]) + ")")

    cases = [(3, 32, (3, 3), (2, 2), (0, 1, 0, 1), "a"), (16, 16, (1, 1), (1, 1), (0, 0, 0, 0), "b"),
             (7, 8, (1, 1), (1, 1), (2, 2, 2, 2), "c_d")]
    instances = [write(*case) for case in cases]
    scopes = [_scope(c[0], c[1], c[2][0], c[3][0], c[5]) for c in cases]
    [variant] = unify(instances, scopes)

    def f(*args, **kwargs):
        return args, kwargs

    for member, instance in enumerate(instances):
        expected = eval(instance.render(), {"f": f})
        assert eval(variant.text, {"f": f, "name": scopes[member].name, **variant.arguments[member]}) == expected


def test_instances_that_differ_in_structure_get_a_definition_each():
    a = _fragment(lambda: f"x = torch.relu({codegen.py(1)})")
    b = _fragment(lambda: f"x = torch.sigmoid({codegen.py(1)})")
    variants = unify([a, b, a], [Scope({}), Scope({}), Scope({})])
    assert [v.members for v in variants] == [(0, 2), (1,)]


def test_booleans_never_stand_for_integers():
    a = _fragment(lambda: f"f(bias={codegen.py(True)})")
    [variant] = unify([a, a], [Scope({"n": 1}), Scope({"n": 1})])
    assert variant.text == "f(bias=True)"


def test_a_repeat_becomes_a_loop_with_growing_channels():
    iterations = [_fragment(lambda c=c, n=n: codegen.call("DenseLayer", codegen.Hint(c, "in_channels"), 32, name=n))
                  for c, n in zip((64, 96, 128), ("layer", "layer_1", "layer_2"), strict=True)]
    loop = unify_iterations(iterations)
    assert loop is not None
    assert loop.render() == 'DenseLayer(64 + i * 32, 32, name="layer" + ("" if i == 0 else f"_{i}"))'
    assert loop.meanings[0] == "in_channels"


def test_iterations_with_other_structure_are_not_a_loop():
    assert unify_iterations([_fragment(lambda: "a"), _fragment(lambda: "b")]) is None


def test_a_sequence_without_a_step_is_indexed():
    iterations = [_fragment(lambda v=v: codegen.call("f", v)) for v in (1, 5, 2)]
    assert unify_iterations(iterations).render() == "f((1, 5, 2)[i])"


def test_the_checker_keeps_blocks_repeats_and_taps():
    model = parse(
        "input 8x8x3\n"
        "block conv_bn filters k=3 { conv2d filters k pad=same | batchnorm }\n"
        "conv_bn 4 name=stem\n"
        "tap skip\n"
        "repeat 2 { conv_bn 4 1 }\n"
        "add @skip\n"
        "flatten | dense 2\n"
    )
    assert [b.name for b in model.blocks] == ["conv_bn"]
    assert model.blocks[0].params == ("filters",) and dict(model.blocks[0].defaults) == {"k": 3}
    call, tap, repeat = model.body[:3]
    assert isinstance(call, ir.BlockCall) and call.instance == "stem" and dict(call.args) == {"filters": 4, "k": 3}
    assert call.input == ir.INPUT_NAME and call.output == "stem_batch_normalization"
    assert isinstance(tap, ir.Tap) and tap.tensor == call.output and tap.span.line == 4
    assert isinstance(repeat, ir.Repeat) and repeat.count == 2 and len(repeat.iterations) == 2
    assert [n.instance for (n,) in repeat.iterations] == ["conv_bn", "conv_bn_1"]
    assert ir.layers_of(model.body) == model.layers
    assert self_contained(call) and self_contained(repeat)


def test_a_block_that_reads_an_outer_tap_is_not_self_contained():
    model = parse("input 8\ndense 8\ntap t\ndense 8\nblock b { dense 8 | add @t }\nb\n")
    assert not self_contained(model.body[-1])


def test_a_size_that_scales_with_a_parameter_is_written_as_the_product():
    def write(filters, channels):
        return _fragment(lambda: f"f({codegen.py(filters * 4)}, i * {codegen.py(channels // 2)})")

    instances = [write(64, 100), write(128, 300)]
    scopes = [Scope({"filters": 64, "in_channels": 100}), Scope({"filters": 128, "in_channels": 300})]
    [variant] = unify(instances, scopes)
    # Inside arithmetic the derived size is parenthesized: i * (in_channels // 2), not (i * in_channels) // 2.
    assert variant.text == "f(filters * 4, i * (in_channels // 2))"
    for member, instance in enumerate(instances):
        namespace = {"f": lambda *a: a, "i": 3}
        assert eval(variant.text, {**namespace, **variant.arguments[member]}) == eval(instance.render(), namespace)
