import xgenmm_sampler


def test_version():
    assert xgenmm_sampler.__version__ == "0.1.0"
