"""The generated half of the hostile-input corpus: inputs too large, binary or line-ending
sensitive to commit as files. The small, readable half is committed next to this script.

A case's name says what it must do: ``ok_*`` compiles, ``err_*`` gets a clean diagnostic
(LayerDSLError with a line and column; exit 1 or 2 from the CLI; never a traceback).

    python tests/hostile/make_corpus.py OUTDIR    # write every generated case as OUTDIR/NAME.layers
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def generated() -> dict[str, bytes]:
    dims_2000 = "x".join(["1"] * 2000)
    return {
        # Encoding.
        "err_binary_random": _random_bytes(5, 4096),
        "err_binary_png_header": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + _random_bytes(6, 200),
        "err_not_utf8_latin1": "dense 4 in=3 name=caf\xe9\n".encode("latin-1"),
        "err_not_utf8_truncated_sequence": b"dense 4 in=3 # \xe2\x82\n",
        "err_nul_byte_between_tokens": b"dense 4\x00 in=3\n",
        "err_nul_byte_in_string": b'dense 4 in=3 name="a\x00b"\n',
        "ok_nul_byte_in_comment": b"dense 4 in=3  # \x00\n",
        "ok_bom": b"\xef\xbb\xbfmodel m\ndense 4 in=3\n",
        "err_bom_twice": b"\xef\xbb\xbf\xef\xbb\xbfdense 4 in=3\n",
        # Line endings and whitespace.
        "ok_crlf": b"model m\r\ninput 3\r\n\r\ndense 4  # four\r\nrelu\r\n",
        "ok_lone_cr_is_whitespace": b"dense 4\rin=3\r| relu\r",
        "err_lone_cr_does_not_end_a_statement": b"input 3\rdense 4\n",
        "ok_lone_cr_ends_a_comment": b"dense 4 in=3 # note\r| relu\n",
        "ok_tabs_and_form_feeds": b"model\tm\ndense\t4\fin=3\t|\trelu\x0c\n",
        "err_vertical_tab": b"dense 4\x0bin=3\n",
        "err_unicode_line_separator_between_tokens": "dense 4\u2028in=3\n".encode(),
        "err_unicode_next_line_between_tokens": "dense 4\x85in=3\n".encode(),
        "ok_unicode_line_separator_in_comment": "# a\u2028import os\u2029os.system('touch PWNED')\ndense 4 in=3\n".encode(),
        # Size.
        "ok_20000_layers_on_one_line": ("input 8 | " + " | ".join(["dense 8", "relu"] * 10_000) + "\n").encode(),
        "err_2000_dimensional_input": f"input {dims_2000}\nflatten\ndense 4\n".encode(),
        "err_2000_dimensional_kernel": f"input 8x8x3\nconv2d 4 {dims_2000}\n".encode(),
        "err_2000_dimensional_zero_input": ("input " + "x".join(["0"] * 2000) + "\nflatten\n").encode(),
        "err_huge_integer_10_pow_100": f"dense {10**100} in=3\n".encode(),
        "err_huge_integer_5000_digits": ("dense " + "7" * 5000 + " in=3\n").encode(),
        "err_huge_dims_5000_digits": ("input " + "9" * 5000 + "x3\nflatten\n").encode(),
        "err_huge_integer_for_a_float_option": ("input 3\ndropout 1" + "0" * 400 + "\n").encode(),
        "err_huge_float_1e400": b"input 3\ndropout 1e400\n",
        "err_floats_with_100000_digits": (
            "input 3\ndropout 0." + "3" * 100_000 + " | dense 2 | dropout 1e-" + "9" * 5000 + "\n"
        ).encode(),
        "err_name_100000_chars": ("dense 4 in=3 name=" + "a" * 100_000 + "\n").encode(),
        "err_layer_kind_100000_chars": ("a" * 100_000 + " 4 in=3\n").encode(),
        "err_string_100000_chars": ('dense 4 in=3 name="' + "q" * 100_000 + '"\n').encode(),
        "ok_comment_200000_chars": ("# " + "#" * 200_000 + "\ndense 4 in=3\n").encode(),
        "err_20000_blank_lines_then_error": ("\n" * 20_000 + "dense = 3\n").encode(),
        "ok_20000_pipes": ("dense 4 in=3" + " |" * 20_000 + "\n").encode(),
        "err_6_million_characters": b"#" * 6_000_000,
        # Nesting.
        "err_100000_open_braces": b"{" * 100_000,
        "err_100000_close_braces": b"}" * 100_000,
        "err_braces_nested_10000_deep": ("a {" * 10_000 + "}" * 10_000).encode(),
        "err_braces_nested_10000_deep_after_comment_and_cr": ("#\r" + "a {" * 10_000 + "}" * 10_000).encode(),
        "err_brackets_and_parens_100000_deep": b"dense 4 in=3 name=" + b"(" * 50_000 + b"[" * 50_000,
        # Expansion: a few hundred bytes that describe 2**40 or 10**8 layers.
        "err_nested_repeat_bomb": ("input 3\n" + "repeat 2 { " * 40 + "relu" + " }" * 40 + "\n").encode(),
        "err_repeat_bomb_10000_of_10000": b"input 3\nrepeat 10000 { repeat 10000 { relu } }\n",
        # Arithmetic (issue 11): products that grow past any size, and deep or long expressions.
        "err_expression_product_of_200_factors": ("input 3\ndense " + "*".join(["99999"] * 200) + "\n").encode(),
        "err_expression_parentheses_6_deep": b"input 3\ndense ((((((3))))))\n",
        "err_expression_100000_terms": ("input 3\ndense " + "+".join(["1"] * 50_000) + "\n").encode(),
        "err_expression_repeat_bomb_by_arithmetic": b"input 3\nrepeat 100*100 { repeat 100*100 { relu } }\n",
        "err_expression_count_from_parameter_bomb": (
            b"block b n { repeat n { relu } }\ninput 3\nrepeat 10000 { b 5000*2 }\n"
        ),
        "err_block_doubling_bomb": (
            "block b0 { relu }\n"
            + "".join(f"block b{i} {{ b{i - 1} | b{i - 1} }}\n" for i in range(1, 41))
            + "input 3\nb40\n"
        ).encode(),
    }


def committed() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(HERE.glob("*.layers"))}


def corpus() -> dict[str, bytes]:
    cases = {**committed(), **generated()}
    assert all(name.startswith(("ok_", "err_")) for name in cases)
    return cases


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, data in generated().items():
        (out / f"{name}.layers").write_bytes(data)
    print(f"wrote {len(generated())} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
