import torch

from xgenmm_lm.inference import generate_texts

PROMPTS = [
    "<|user|>\n<image>\nWhat is in the image?<|end|>\n<|assistant|>\n",
    "<|user|>\nhello world<|end|>\n<|assistant|>\n",
    "<|user|>\n<image> and <image>. What is in the second image?<|end|>\n<|assistant|>\n",
]


def prepare(model, tokenizer, images, which):
    proc = model.image_processor()
    per_prompt = {0: [images[0]], 1: [], 2: [images[1], images[2]]}
    ids = [tokenizer(PROMPTS[i]).input_ids for i in which]
    length = max(len(i) for i in ids)  # left padding, as for generation
    input_ids = torch.tensor([[tokenizer.pad_token_id] * (length - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (length - len(i)) + [1] * len(i) for i in ids])
    pv = [[proc(im).pixel_values for im in per_prompt[i]] for i in which]
    sizes = [[im.size for im in per_prompt[i]] for i in which]
    return input_ids, mask, pv, sizes


def greedy_without_cache(model, input_ids, pixel_values, image_sizes, steps):
    """Re-run the full forward each step and take the argmax of the last position."""
    ids = input_ids.clone()
    new = []
    for _ in range(steps):
        logits = model(input_ids=ids, pixel_values=pixel_values, image_sizes=image_sizes).logits
        token = logits[0, -1].argmax().item()
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return new


def no_stop(model):
    return dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)


def test_greedy_with_cache_equals_no_cache_loop(model, tokenizer, images):
    for which in ((0,), (2,), (1,)):
        input_ids, mask, pv, sizes = prepare(model, tokenizer, images, which)
        out = model.generate(input_ids, mask, pv, sizes, **no_stop(model))
        assert out.shape == (1, 6)  # only new tokens
        assert out[0].tolist() == greedy_without_cache(model, input_ids, pv, sizes, 6)


def test_batch_generation_equals_one_by_one(model, tokenizer, images):
    input_ids, mask, pv, sizes = prepare(model, tokenizer, images, (0, 1, 2))
    batch = model.generate(input_ids, mask, pv, sizes, **no_stop(model))
    for b in range(3):
        ids, m, p, s = prepare(model, tokenizer, images, (b,))
        single = model.generate(ids, m, p, s, **no_stop(model))
        assert batch[b].tolist() == single[0].tolist()


def test_generation_stops_on_end_token(model, tokenizer, images, config):
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    assert end_id in config.eos_token_id and end_id != 32007
    with torch.no_grad():
        model.lang_model.lm_head.bias[end_id] = 1e4  # make <|end|> the greedy choice
    input_ids, mask, pv, sizes = prepare(model, tokenizer, images, (0,))
    out = model.generate(input_ids, mask, pv, sizes, max_new_tokens=8, do_sample=False)
    assert out[0].tolist() == [end_id]
    assert generate_texts(model, tokenizer, [PROMPTS[0]], [images[0]], max_new_tokens=8) == [""]


def test_generate_texts_matches_generate(model, tokenizer, images):
    texts = generate_texts(
        model, tokenizer, PROMPTS, [images[0], None, [images[1], images[2]]], batch_size=2, max_new_tokens=5
    )
    assert len(texts) == 3
    for i, which in enumerate((0, 1, 2)):
        ids, m, p, s = prepare(model, tokenizer, images, (which,))
        row = model.generate(ids, m, p, s, max_new_tokens=5, do_sample=False)[0].tolist()
        stops = set(model.config.eos_token_id)
        cut = row[: next((k for k, t in enumerate(row) if t in stops), len(row))]
        assert texts[i] == tokenizer.decode(cut, skip_special_tokens=True).strip()


def test_beam_search_and_sampling_run(model, tokenizer, images):
    input_ids, mask, pv, sizes = prepare(model, tokenizer, images, (0, 1))
    beams = model.generate(input_ids, mask, pv, sizes, max_new_tokens=4, num_beams=2, do_sample=False)
    assert beams.shape[0] == 2 and beams.shape[1] <= 4
    torch.manual_seed(0)
    sampled = model.generate(input_ids, mask, pv, sizes, max_new_tokens=4, do_sample=True, top_k=5)
    assert sampled.shape[0] == 2
