"""`xgenmm-chat` one-shot and interactive on a tiny checkpoint."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xgenmm_data.templates import build_prompt
from xgenmm_eval import chat
from xgenmm_eval.prompting import load_image
from xgenmm_lm.inference import generate_texts


def _expected(model, tokenizer, query, images, history=None, max_new_tokens=5):
    prompt = build_prompt(query, history=history)
    return generate_texts(
        model, tokenizer, [prompt], [[load_image(p) for p in images]], max_new_tokens=max_new_tokens
    )[0]


def test_one_shot(tiny_ckpt, tiny_model, image_files, capsys):
    rc = chat.main(["--model", str(tiny_ckpt), "--image", str(image_files[0]), "--image", str(image_files[1]),
                    "--max-new-tokens", "5", "--device", "cpu", "What is in the second image?"])  # fmt: skip
    assert rc == 0
    expected = _expected(*tiny_model, "<image>\n<image>\nWhat is in the second image?", image_files[:2])
    assert capsys.readouterr().out == expected + "\n"


def test_one_shot_errors(tiny_ckpt, image_files, capsys):
    rc = chat.main(
        ["--model", str(tiny_ckpt), "--image", str(image_files[0]), "--device", "cpu", "<image> a <image> b"]
    )
    assert rc == 2 and "2 <image> placeholder(s) but 1 image(s)" in capsys.readouterr().err
    rc = chat.main(["--model", str(tiny_ckpt), "--image", "missing.jpg", "hi"])
    assert rc == 2 and "image not found: missing.jpg" in capsys.readouterr().err


def test_interactive_loop_streams_and_keeps_history(tiny_ckpt, tiny_model, image_files, monkeypatch, capsys):
    lines = [
        "What colour?",
        "",
        f"/image {image_files[2]}",
        "/image nowhere.png",
        "And this one?",
        "/quit",
        "never",
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    rc = chat.main(
        [
            "--model",
            str(tiny_ckpt),
            "--image",
            str(image_files[0]),
            "--max-new-tokens",
            "5",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    captured = capsys.readouterr()
    replies = captured.out.split("\n")[:-1]
    assert len(replies) == 2
    first = _expected(*tiny_model, "<image>\nWhat colour?", image_files[:1])
    history = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": first}]
    second = _expected(
        *tiny_model, "<image>\nAnd this one?", [image_files[0], image_files[2]], history=history
    )
    assert [r.strip() for r in replies] == [first, second]  # streamed text == non-streamed greedy answer
    assert "image not found: nowhere.png" in captured.err and "(image attached: 1 pending)" in captured.err


def test_chat_loop_reset():
    """`/reset` drops history and pending images (checked without a model: nothing is asked after it)."""
    out, err = io.StringIO(), io.StringIO()
    n = chat.chat_loop(None, None, stdin=io.StringIO("/reset\n/exit\n"), stdout=out, stderr=err)
    assert n == 0 and "(conversation cleared)" in err.getvalue() and out.getvalue() == ""


@pytest.mark.slow  # a fresh interpreter: ~20 s of imports on a loaded 2-core machine
def test_console_script_one_shot(tiny_ckpt, tiny_model, image_files):
    exe = Path(sys.executable).with_name("xgenmm-chat")
    cmd = [
        str(exe),
        "--model",
        str(tiny_ckpt),
        "--image",
        str(image_files[0]),
        "--max-new-tokens",
        "5",
        "Describe it.",
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == _expected(*tiny_model, "<image>\nDescribe it.", image_files[:1]) + "\n"
