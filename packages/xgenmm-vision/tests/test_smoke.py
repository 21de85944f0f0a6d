import xgenmm_vision


def test_version():
    assert xgenmm_vision.__version__ == "0.1.0"
