"""`xgenmm-chat`: ask a checkpoint about images, once or in an interactive loop with streamed tokens.

    xgenmm-chat --model CKPT --image a.jpg --image b.jpg "What is in the second image?"   # one shot
    xgenmm-chat --model CKPT --image a.jpg                                                # interactive

Without `<image>` in the question, one `<image>\\n` per image is put in front of it (the training layout);
otherwise the question must hold one `<image>` per image, in image order. Decoding is greedy (as LAVIS
`inference.ipynb`), stopping at `<|end|>`. Interactive commands: `/image PATH` attaches an image to the next
question, `/reset` clears the conversation, `/quit` (or end of input) leaves. Replies are streamed to stdout;
the `>>> ` prompt goes to stderr.
"""

from __future__ import annotations

import argparse
import sys

import torch
from transformers import TextStreamer

from xgenmm_data.templates import build_prompt
from xgenmm_lm.inference import generate_texts
from xgenmm_lm.tokenization import stop_token_ids

from .inputs import encode_sample
from .loading import load_model
from .prompting import load_image, place_images


class _Streamer(TextStreamer):
    """TextStreamer that writes to a given text stream instead of stdout."""

    def __init__(self, tokenizer, out):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.out = out

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.out.write(text)
        self.out.flush()


def answer(
    model, tokenizer, question: str, images=(), max_new_tokens=1024, template="phi_3", system=None
) -> str:
    """One-shot reply (greedy, cut at `<|end|>`) to `question` about `images` (paths or PIL images)."""
    pil = [load_image(im) for im in images]
    prompt = build_prompt(place_images(question, len(pil)), template=template, system=system)
    return generate_texts(model, tokenizer, [prompt], [pil], batch_size=1, max_new_tokens=max_new_tokens)[0]


@torch.no_grad()
def stream_reply(model, tokenizer, prompt: str, images, max_new_tokens: int, out) -> str:
    """Greedy reply to a full prompt, written token by token to `out`; returns the text cut at `<|end|>`."""
    batch = encode_sample(model, tokenizer, prompt, images)
    new_ids = model.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        streamer=_Streamer(tokenizer, out),
    )
    ids, stops = new_ids[0].tolist(), set(stop_token_ids(tokenizer))
    end = next((k for k, t in enumerate(ids) if t in stops), len(ids))
    return tokenizer.decode(ids[:end], skip_special_tokens=True).strip()


def chat_loop(model, tokenizer, images=(), max_new_tokens=1024, template="phi_3", system=None,
              stdin=None, stdout=None, stderr=None) -> int:  # fmt: skip
    """Interactive multi-turn chat on text streams. Returns the number of answered questions."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    history: list[dict] = []
    seen: list = []  # images already placed in earlier turns
    pending = [load_image(im) for im in images]  # images for the next question
    answered = 0
    while True:
        stderr.write(">>> ")
        stderr.flush()
        line = stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            history, seen, pending = [], [], []
            stderr.write("(conversation cleared)\n")
            continue
        if line.startswith("/image "):
            try:
                pending.append(load_image(line[len("/image ") :].strip()))
                stderr.write(f"(image attached: {len(pending)} pending)\n")
            except (OSError, ValueError) as err:
                stderr.write(f"error: {err}\n")
            continue
        try:
            question = place_images(line, len(pending))
        except ValueError as err:
            stderr.write(f"error: {err}\n")
            continue
        prompt = build_prompt(question, template=template, system=system, history=history)
        reply = stream_reply(model, tokenizer, prompt, seen + pending, max_new_tokens, stdout)
        stdout.write("\n")
        stdout.flush()
        history += [{"from": "human", "value": question}, {"from": "gpt", "value": reply}]
        seen, pending = seen + pending, []
        answered += 1
    return answered


def build_parser() -> argparse.ArgumentParser:
    """The `xgenmm-chat` command line."""
    p = argparse.ArgumentParser(
        prog="xgenmm-chat", description="Chat with an xGen-MM checkpoint about images."
    )
    p.add_argument("question", nargs="?", help="question for a one-shot answer; omit for an interactive loop")
    p.add_argument("--model", required=True, help="checkpoint folder (ours or a released snapshot)")
    p.add_argument("--image", action="append", default=[], help="image file; repeat for several, in order")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--template", default="phi_3", help="chat template of xgenmm_data (default phi_3)")
    p.add_argument("--system", default=None, help="system message (default: the template's)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="bf16, fp16, fp32 (default: bf16 on cuda, fp32 on cpu)")
    return p


def main(argv=None) -> int:
    """`xgenmm-chat`: one answer, or an interactive loop; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        images = [load_image(p) for p in args.image]
        model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
        kw = dict(max_new_tokens=args.max_new_tokens, template=args.template, system=args.system)
        if args.question is not None:
            print(answer(model, tokenizer, args.question, images, **kw))
        else:
            chat_loop(model, tokenizer, images, **kw)
    except (FileNotFoundError, ValueError) as err:
        print(f"xgenmm-chat: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
