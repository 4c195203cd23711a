import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every data test renders into its own cache folder (never the user's ~/.cache)."""
    cache = tmp_path / "metagan_cache"
    monkeypatch.setenv("METAGAN_HUB_CACHE", str(cache))
    return cache
