import xgenmm_train


def test_version():
    assert xgenmm_train.__version__ == "0.1.0"
