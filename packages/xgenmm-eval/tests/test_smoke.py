import xgenmm_eval


def test_version():
    assert xgenmm_eval.__version__ == "0.1.0"
