import xgenmm_lm


def test_version():
    assert xgenmm_lm.__version__ == "0.1.0"
