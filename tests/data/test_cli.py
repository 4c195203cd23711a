import re

from PIL import Image

from metagan_hub.data.__main__ import main


def test_preview_digits(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["preview", "--dataset", "digits", "--classes", "3", "--samples", "4", "--resolution", "8",
                 "--scale", "1", "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "classes: 10; images: 1797" in text and "7 train / 1 val / 2 test" in text
    assert Image.open(out).size == (4 * 10 + 2, 3 * 10 + 2)


def test_preview_kanjivg(tmp_path, capsys):
    out = tmp_path / "kanji.png"
    assert main(["preview", "--dataset", "kanjivg", "--classes", "2", "--samples", "3", "--samples_per_class", "3",
                 "--resolution", "16", "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert (
        re.search(r"kanjivg characters \(kanji\): \d{4}, 3 samples each", text)
        and "images per previewed class: [3, 3]" in text
    )
    assert Image.open(out).size == (4 * (3 * 18 + 2), 4 * (2 * 18 + 2))


def test_info_and_errors(tmp_path, capsys):
    assert main(["info", "--dataset", "kanjivg"]) == 0
    assert "train /" in capsys.readouterr().out
    assert main(["preview", "--dataset", "imagefolder", "--root", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_preview_image_folder_names_its_classes(tmp_path, capsys):
    for name in ("cats", "dogs"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("L", (20, 20), 40 * i).save(tmp_path / name / f"{i}.png")
    out = tmp_path / "grid.png"
    assert main(["preview", "--dataset", "imagefolder", "--root", str(tmp_path), "--resolution", "8",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "previewed classes: 2 (cats, dogs); images per previewed class: [3, 3]" in capsys.readouterr().out
