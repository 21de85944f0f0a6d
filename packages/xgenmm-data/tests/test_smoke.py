import xgenmm_data


def test_version():
    assert xgenmm_data.__version__ == "0.1.0"
