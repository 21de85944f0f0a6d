import pytest

from xgenmm_data.metrics import exact_match, extract_choice, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    "raw,norm",
    [
        ("Two dogs.", "2 dogs"),
        ("The Red one", "red 1"),
        ("dont know", "don't know"),
        ("3.5", "3.5"),
        ("1,000", "1000"),
        ("yes!", "yes"),
        ("An apple\n", "apple"),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_exact_match():
    assert exact_match("Two", ["2"]) == 1.0
    assert exact_match("three", "2") == 0.0


def test_vqa_accuracy_official_leave_one_out():
    answers = ["2"] * 3 + ["3"] * 7
    # leaving out a "2": 2 matches -> 2/3 (3 subsets); leaving out a "3": 3 matches -> 1 (7 subsets)
    assert vqa_accuracy("two", answers) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert vqa_accuracy("3", answers) == 1.0
    assert vqa_accuracy("4", answers) == 0.0
    assert vqa_accuracy("yes", ["yes"] + ["no"] * 9) == pytest.approx(9 * (1 / 3) / 10)
    assert vqa_accuracy("yes", ["yes", "yes"] + ["no"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert vqa_accuracy("cat", "a cat") == 1.0


@pytest.mark.parametrize(
    "pred,letter",
    [
        ("B", "B"),
        ("(C)", "C"),
        ("A. cat", "A"),
        ("The answer is D.", "D"),
        ("It is a red car", "C"),
        ("zebra", None),
    ],
)
def test_extract_choice(pred, letter):
    assert extract_choice(pred, ["cat", "dog", "red car", "car"]) == letter


def test_extract_choice_dict_options():
    assert extract_choice("b", {"A": "yes", "B": "no"}) is None  # lower-case lone letter is ambiguous prose
    assert extract_choice("no", {"A": "yes", "B": "no"}) == "B"
