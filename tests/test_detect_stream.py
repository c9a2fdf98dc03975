"""`facecraft detect` on folders: destinations checked first, results streamed, runs resumed,
images grouped by bucket for the whole run (issue #13)."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from facecraft import cli
from facecraft.infer import detections, stream

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = REPO / "facecraft" / "assets" / "astronaut.jpg"


@pytest.fixture(name="folder")
def _folder(tmp_path):
  """The sample at two sizes of one bucket, and a corrupt file."""
  pics = tmp_path / "pics"
  pics.mkdir()
  shutil.copy(SAMPLE, pics / "a_astronaut.jpg")
  Image.open(SAMPLE).resize((480, 480)).save(pics / "b_small.png")
  (pics / "c_broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  return pics


def _detect(*args):
  return cli.main(["detect", *map(str, args), "--model", "mtcnn", "--batch-size", "2"])


@pytest.mark.parametrize("where", ["output_missing_folder", "output_is_folder", "draw_is_file",
                                   "draw_under_file", "jsonl_missing_folder"])
def test_unwritable_destinations_fail_first_in_one_line(tmp_path, folder, capsys, where):
  a_file = tmp_path / "file.txt"
  a_file.write_text("x")
  extra = {"output_missing_folder": ["--output", tmp_path / "nope" / "d.json"],
           "output_is_folder": ["--output", tmp_path],
           "draw_is_file": ["--draw", a_file],
           "draw_under_file": ["--draw", a_file / "sub"],
           "jsonl_missing_folder": ["--jsonl", tmp_path / "nope" / "d.jsonl"]}[where]
  assert _detect(folder, *extra) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
  assert not list(tmp_path.glob("*.jsonl"))  # Nothing ran.


def test_results_stream_resume_and_match_the_detector(tmp_path, folder, capsys):
  out = tmp_path / "dets.json"
  assert _detect(folder, "--output", out) == 0
  err = capsys.readouterr().err
  assert "images/s" in err and "ETA" in err and "compiled 1 functions" in err
  lines = [json.loads(l) for l in (tmp_path / "dets.jsonl").read_text().splitlines()]
  assert sorted(e["id"] for e in lines) == ["a_astronaut", "b_small", "c_broken"]
  assert "error" in next(e for e in lines if e["id"] == "c_broken")
  doc = json.loads(out.read_text())
  assert list(doc) == ["a_astronaut", "b_small"]  # Input order, as before streaming.
  # The same numbers as the library's own detect() of each picture.
  from facecraft.infer import files  # pylint: disable=g-import-not-at-top
  from facecraft.infer.detector import Detector  # pylint: disable=g-import-not-at-top
  det = Detector.from_pretrained("mtcnn")
  for key, name in (("a_astronaut", "a_astronaut.jpg"), ("b_small", "b_small.png")):
    assert doc[key] == files.detections_to_json(det.detect(str(folder / name)))
    assert len(doc[key]) == 1

  # A torn last line (a killed run) is redone; finished images are not.
  text = (tmp_path / "dets.jsonl").read_text().splitlines()
  torn = json.loads(text[-1])["id"]
  (tmp_path / "dets.jsonl").write_text("\n".join(text[:-1]) + "\n" + text[-1][:20])
  out.unlink()
  assert _detect(folder, "--output", out) == 0
  err = capsys.readouterr().err
  assert "resuming: 2 of 3 images" in err
  assert json.loads(out.read_text()) == doc
  ids = [json.loads(l)["id"] for l in (tmp_path / "dets.jsonl").read_text().splitlines()
         if l.startswith("{") and l.endswith("}")]
  assert sorted(ids) == sorted([e["id"] for e in lines]) and ids[-1] == torn

  # Everything done: nothing is compiled, the JSON is written again.
  assert _detect(folder, "--output", out) == 0
  err = capsys.readouterr().err
  assert "resuming: 3 of 3" in err and "compiled 0 functions" in err


def test_a_failing_run_keeps_what_it_finished(tmp_path, folder, monkeypatch, capsys):
  """The detector dies on the second batch: the first batch's results are on disk."""
  from facecraft.infer.detector import Detector  # pylint: disable=g-import-not-at-top
  real, calls = Detector.detect_arrays, []

  def flaky(self, arrays, *args, **kw):
    calls.append(len(arrays))
    if len(calls) == 2:
      raise RuntimeError("out of memory, say")
    return real(self, arrays, *args, **kw)

  monkeypatch.setattr(Detector, "detect_arrays", flaky)
  out = tmp_path / "d.jsonl"
  with pytest.raises(RuntimeError):
    cli.main(["detect", str(folder), "--model", "mtcnn", "--batch-size", "1", "--output",
              str(out), "--no-progress"])
  assert len(out.read_text().splitlines()) == 1
  monkeypatch.setattr(Detector, "detect_arrays", real)
  capsys.readouterr()
  assert cli.main(["detect", str(folder), "--model", "mtcnn", "--batch-size", "1", "--output",
                   str(out), "--no-progress"]) == 0
  assert "resuming: 1 of 3" in capsys.readouterr().err
  assert len(out.read_text().splitlines()) == 3


class _FakeDetector:
  """Buckets by width only; records the batches it is given (no jax)."""

  def __init__(self):
    self.calls = []

  def bucket(self, h, w):
    return (1, 100 if w <= 100 else 200)

  def decode(self, image):
    return image

  def merge_buckets(self, counts):
    return {b: b for b in counts}

  def detect_arrays(self, arrays, batch_size=8, pad_batch=False, merged=None):
    assert merged == {(1, 100): (1, 100), (1, 200): (1, 200)}
    self.calls.append((self.bucket(*arrays[0].shape[:2]), len(arrays), batch_size, pad_batch))
    return [detections.Detections.empty(False) for _ in arrays]


def test_a_whole_run_is_grouped_by_bucket_each_at_one_batch():
  widths = [50, 150, 60, 160, 70, 170, 80, 90, 95]  # Interleaved: 6 small, 3 large.
  items = [(f"im{i}", np.zeros((1, w, 3), np.uint8)) for i, w in enumerate(widths)]
  fake = _FakeDetector()
  got = [key for batch in stream.run(fake, items, batch_size=4) for key, _ in batch]
  assert sorted(got) == sorted(k for k, _ in items)
  assert fake.calls == [((1, 100), 4, 4, True), ((1, 100), 2, 4, True), ((1, 200), 3, 4, True)]
  assert stream.group_batch(3, 8) == 4 and stream.group_batch(30, 8) == 8


def test_progress_line_has_rate_and_eta():
  lines = []

  class Out:
    def write(self, s):
      lines.append(s)

    def flush(self):
      pass

  p = stream.Progress(10, resumed=2, every_s=0, out=Out())
  p.update(3)
  assert "5/10 images" in lines[0] and "images/s" in lines[0] and "ETA" in lines[0]


def test_compile_cache_location(monkeypatch, tmp_path):
  from facecraft import cache  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("FACECRAFT_CACHE", str(tmp_path / "c"))
  monkeypatch.delenv("FACECRAFT_COMPILE_CACHE", raising=False)
  assert cache.compile_cache_dir() == str(tmp_path / "c" / "jax")
  assert cache.crop_cache_dir() == str(tmp_path / "c" / "crops")
  monkeypatch.setenv("FACECRAFT_COMPILE_CACHE", str(tmp_path / "j"))
  assert cache.compile_cache_dir() == str(tmp_path / "j")
  assert cache.compile_cache_dir("off") is None and cache.compile_cache_dir("/x") == "/x"


def test_warmup_fills_the_cache_that_detect_then_loads(tmp_path, capsys):
  """`facecraft warmup --size` compiles a bucket into the cache; a detect run of a picture of
  that bucket then finds it there (loaded whole, in a fraction of the compile time)."""
  jax_cache = tmp_path / "jax"
  assert cli.main(["warmup", "--size", "90x120", "--model", "mtcnn", "--batch-size", "1",
                   "--compile-cache", str(jax_cache)]) == 0
  err = capsys.readouterr().err
  assert "bucket (256, 256) batch 1" in err and "compiled 1 functions" in err
  assert any(jax_cache.iterdir())
  cold = float(err.split("compiled 1 functions in ")[1].split(" s")[0])
  Image.open(SAMPLE).resize((120, 90)).save(tmp_path / "small.jpg")
  assert cli.main(["detect", str(tmp_path / "small.jpg"), "--model", "mtcnn", "--batch-size", "1",
                   "--compile-cache", str(jax_cache), "--output", str(tmp_path / "d.json")]) == 0
  err = capsys.readouterr().err
  warm = float(err.split("compiled 1 functions in ")[1].split(" s")[0])
  assert warm < cold / 2, (warm, cold)
  assert "1 loaded whole from its executable store" in err
  assert any((jax_cache / "facecraft_executables").glob("*.exe"))


class _EchoEngine:
  """The least engine Detector can run (no jax): two buckets, no faces, compiles recorded."""

  max_tiers, params, has_landmarks = 1, None, False

  def __init__(self):
    self.compiled = []

  def bucket(self, h, w):
    return (1, 100 if w <= 100 else 200)

  def batch_size(self, batch):
    return batch

  def compile(self, bucket, batch, tier):
    self.compiled.append((bucket, batch, tier))
    return lambda params, x: {"n": x}

  def inputs(self, arrays, bucket, batch):
    return (np.zeros(batch),)

  def outputs(self, host, count):
    return [(detections.Detections.empty(False), False)] * count

  def empty(self, error=None):
    return detections.Detections.empty(False, error)


def test_detector_pad_batch_warmup_counts_and_evaluation_progress(capsys):
  from facecraft.infer.detector import Detector  # pylint: disable=g-import-not-at-top
  engine = _EchoEngine()
  det = Detector(engine)
  two = [np.zeros((1, 50, 3), np.uint8)] * 2
  det.detect_arrays(two, batch_size=4)                  # Fewer images: a smaller batch...
  det.detect_arrays(two, batch_size=4, pad_batch=True)  # ...unless padded to the bucket's batch.
  assert engine.compiled == [((1, 100), 2, 0), ((1, 100), 4, 0)]
  assert det.warmup((1, 200), 4) >= 0 and engine.compiled[-1] == ((1, 200), 4, 0)
  assert det.compile_count == 3 and det.bucket(1, 150) == (1, 200)
  det.detect_arrays(two + [np.zeros((1, 150, 3), np.uint8)], batch_size=4, progress=True)
  err = capsys.readouterr().err
  assert "bucket (1, 100), 2 images" in err and "3/3" in err  # A bar that moves per bucket.


def test_pyramid_engine_pads_rare_buckets_into_larger_ones():
  """A run's rare bucket runs padded in a larger one when that costs less than its compile
  (results do not depend on the bucket); a populous one keeps its own."""
  from facecraft.infer.detector import Detector  # pylint: disable=g-import-not-at-top
  det = Detector.from_pretrained("mtcnn", merge_compile_s=10)
  counts = {(512, 768): 40, (512, 512): 3, (256, 256): 200, (768, 512): 1}
  merged = det.merge_buckets(counts)
  assert merged[(512, 512)] == (512, 768) and merged[(512, 768)] == (512, 768)
  assert merged[(256, 256)] == (256, 256)  # 200 pictures padded 6x would cost more.
  assert merged[(768, 512)] == (768, 512)  # Nothing kept holds it.
  never = Detector.from_pretrained("mtcnn")  # The default: bit-identical results.
  assert never.merge_buckets(counts) == {b: b for b in counts}
