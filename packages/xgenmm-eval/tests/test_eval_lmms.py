"""lmms-eval plugin: entry-point registration, generate_until and loglikelihood on lmms-eval's Instance objects."""

import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval", reason="lmms-eval not installed (pip install 'xgenmm-eval[lmms]')")

from lmms_eval.api.instance import Instance  # noqa: E402

from xgenmm_eval.lmms_model import XGenMMLmms  # noqa: E402

TASK, SPLIT = "toy", "test"


def _instance(kind, args, doc_id):
    return Instance(request_type=kind, arguments=args, idx=0,
                    metadata={"task": TASK, "doc_id": doc_id, "repeats": 1})  # fmt: skip


@pytest.fixture(scope="module")
def lmm(tiny_model):
    model, tokenizer = tiny_model
    lm = XGenMMLmms(model=model, tokenizer=tokenizer, batch_size=2, max_new_tokens=5)
    lm.task_dict = {
        TASK: {
            SPLIT: [
                {"image": Image.new("RGB", (40, 30), (200, 0, 0)), "q": "What colour is it?", "a": " red"},
                {"image": Image.new("RGB", (20, 60), (0, 200, 0)), "q": "Is it tall?", "a": " yes"},
                {
                    "image": Image.new("RGB", (90, 24), (0, 0, 200)),
                    "q": "<image> Wide or tall?",
                    "a": " wide",
                },
            ]
        }
    }
    return lm


def _step(ids, plen):
    """Index of the token being generated (generate sees the prompt ids or, from embeddings, only new ids)."""
    k = ids.shape[-1]
    return k - plen if k >= plen else k


def doc_to_visual(doc):
    return [doc["image"]]


def test_entry_point_resolves_to_plugin_class():
    from lmms_eval.models import get_model

    assert get_model("xgenmm") is XGenMMLmms


def test_generate_until_matches_library_generation(lmm):
    from xgenmm_data.templates import build_prompt
    from xgenmm_lm.inference import generate_texts

    docs = lmm.task_dict[TASK][SPLIT]
    short = {"max_new_tokens": 3, "until": ["\n\n"]}
    longer = {"max_new_tokens": 5}
    reqs = [
        _instance("generate_until", (docs[0]["q"], dict(short), doc_to_visual, 0, TASK, SPLIT), 0),
        _instance("generate_until", (docs[1]["q"], dict(longer), doc_to_visual, 1, TASK, SPLIT), 1),
        _instance("generate_until", (docs[2]["q"], dict(short), doc_to_visual, 2, TASK, SPLIT), 2),
    ]
    out = lmm.generate_until(reqs)
    assert len(out) == 3 and all(isinstance(x, str) for x in out)
    for i, kw in enumerate([short, longer, short]):
        query = docs[i]["q"] if "<image>" in docs[i]["q"] else "<image> " + docs[i]["q"]
        prompt = build_prompt(query, template="phi_3")
        expected = generate_texts(
            lmm.model, lmm.tokenizer, [prompt], [[docs[i]["image"]]], max_new_tokens=kw["max_new_tokens"]
        )
        assert out[i] == expected[0].split("\n\n")[0], f"request {i}"


def test_loglikelihood_matches_forced_generation(lmm):
    """Log-prob from the full forward pass == sum of per-step log-probs of generate (KV cache) forced to the
    same continuation tokens; greedy flag == argmax agreement."""
    from xgenmm_data.templates import build_prompt
    from xgenmm_eval.inputs import encode_sample

    docs = lmm.task_dict[TASK][SPLIT]
    reqs = [
        _instance("loglikelihood", (d["q"], d["a"], doc_to_visual, i, TASK, SPLIT), i)
        for i, d in enumerate(docs)
    ]
    out = lmm.loglikelihood(reqs)
    assert len(out) == 3
    for i, result in enumerate(out):
        nll, greedy = result.text  # lmms-eval passes a GenerationResult's text on unchanged
        doc = docs[i]
        query = doc["q"] if "<image>" in doc["q"] else "<image> " + doc["q"]
        prompt = build_prompt(query, template="phi_3")
        batch = encode_sample(lmm.model, lmm.tokenizer, prompt, [doc["image"]], continuation=doc["a"])
        cont = batch["labels"][0][batch["labels"][0] != -100].tolist()
        plen = batch["input_ids"].shape[1] - len(cont)
        forced = lmm.model.generate(
            input_ids=batch["input_ids"][:, :plen],
            attention_mask=batch["attention_mask"][:, :plen],
            pixel_values=batch["pixel_values"],
            image_sizes=batch["image_sizes"],
            max_new_tokens=len(cont),
            do_sample=False,
            eos_token_id=None,
            prefix_allowed_tokens_fn=lambda b, ids, cont=cont, plen=plen: [cont[_step(ids, plen)]],
            output_logits=True,
            return_dict_in_generate=True,
        )
        steps = torch.stack(forced.logits, 1)[0].float()  # (T, V) raw logits
        ref = torch.log_softmax(steps, -1)[torch.arange(len(cont)), torch.tensor(cont)].sum().item()
        assert forced.sequences[0, -len(cont) :].tolist() == cont
        assert nll == pytest.approx(-ref, abs=1e-3)  # a loss: lmms-eval's multiple_choice takes argmin
        assert greedy == (steps.argmax(-1).tolist() == cont)


def test_bad_visual_type_is_rejected(lmm):
    req = _instance("generate_until", ("q", {}, lambda doc: ["video.mp4"], 0, TASK, SPLIT), 0)
    with pytest.raises(ValueError, match="only images"):
        lmm.generate_until([req])


MC_TASK_YAML = """task: xgenmm_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_choice: {choices}
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""


def _mc_task(folder, image_files, lmm):
    """A local three-question multiple-choice task whose gold answer (index) is, per question, the choice our
    model scores highest (computed here without lmms-eval): lmms-eval's own scoring must then give acc 1.0."""
    import json

    from xgenmm_data.templates import build_prompt
    from xgenmm_eval.inputs import continuation_logprob

    choices = ["red", "green", "blue", "yes"]
    task = folder / "xgenmm_mc"
    task.mkdir(parents=True)
    rows = []
    for path, q in zip(image_files, ["What colour is it?", "Is it tall?", "Which colour?"]):
        prompt = build_prompt("<image> " + q, template="phi_3")
        image = Image.open(path).convert("RGB")
        logps = [continuation_logprob(lmm.model, lmm.tokenizer, prompt, " " + c, [image])[0] for c in choices]
        rows.append(
            {"image": str(path), "question": q, "answer": max(range(len(choices)), key=logps.__getitem__)}
        )
    (task / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (task / "xgenmm_mc.yaml").write_text(
        MC_TASK_YAML.format(data=task / "mc.jsonl", choices=json.dumps(choices))
    )
    (task / "utils.py").write_text(TASK_UTILS)
    return rows


def test_multiple_choice_task_through_lmms_eval_evaluator(lmm, image_files, tmp_path):
    """`output_type: multiple_choice` end to end through lmms-eval's `simple_evaluate`: the loglikelihood
    tuples reach the task's scoring (lmms-eval 0.7.3 stringifies bare tuples) with lmms-eval's sign."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    rows = _mc_task(tmp_path / "tasks", image_files, lmm)
    assert len({r["answer"] for r in rows}) >= 1
    out = simple_evaluate(
        model=lmm,
        tasks=["xgenmm_mc"],
        task_manager=TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False),
        bootstrap_iters=0,
    )
    assert out["results"]["xgenmm_mc"]["acc,none"] == 1.0
    samples = out["samples"]["xgenmm_mc"]
    assert len(samples) == 3
    for s in samples:
        assert len(s["resps"]) == 4
        for ((nll, greedy),) in s["resps"]:
            assert isinstance(nll, float) and nll > 0 and isinstance(greedy, bool)


TASK_YAML = """task: xgenmm_toy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""

TASK_UTILS = """from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]
"""


@pytest.mark.slow  # starts the lmms-eval CLI (~1 min of imports on 2 cores)
def test_lmms_eval_cli_runs_local_task(tiny_ckpt, image_files, tmp_path, lmm):
    """`lmms-eval --model xgenmm` end to end on a local two-question task and a local multiple-choice task
    (no hub access)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    task = tmp_path / "tasks" / "xgenmm_toy"
    task.mkdir(parents=True)
    data = task / "toy.jsonl"
    rows = [{"image": str(image_files[0]), "question": "What colour is it?", "answer": "red"},
            {"image": str(image_files[1]), "question": "Is it tall?", "answer": "yes"}]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (task / "xgenmm_toy.yaml").write_text(TASK_YAML.format(data=data))
    (task / "utils.py").write_text(TASK_UTILS)
    _mc_task(tmp_path / "tasks", image_files, lmm)
    exe = Path(sys.executable).with_name("lmms-eval")
    cmd = [str(exe), "--model", "xgenmm", "--model_args", f"pretrained={tiny_ckpt},device=cpu", "--tasks",
           "xgenmm_toy,xgenmm_mc", "--include_path", str(tmp_path / "tasks"), "--batch_size", "2", "--output_path",
           str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "xgenmm_toy" in res.stdout and "exact_match" in res.stdout
    files = list((tmp_path / "out").rglob("*results*.json"))
    assert files, "no results file written"
    assert json.loads(files[0].read_text())["results"]["xgenmm_mc"]["acc,none"] == 1.0
