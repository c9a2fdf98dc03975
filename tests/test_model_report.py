"""experiments.model_report: the model card's table and a run's training plots."""

from experiments import model_report
from facecraft.train import metrics as metrics_lib


def test_markdown_table():
  row = {"ap@0.5": 0.5, "ap@0.3": 0.9, "tpr@10fp": 0.1, "tpr@50fp": 0.2, "tpr@100fp": 0.3,
         "tpr@500fp": 0.4, "detections_per_image": 3.0, "thresholds": [0.1, 0.003, 0.5]}
  md = model_report.markdown({"facecraft": row}, 511)
  assert "511 faces" in md
  assert "| facecraft | 0.1, 0.003, 0.5 | 0.500 | 0.900 | 0.100 | 0.200 | 0.300 | 0.400 | 3.000 |" in md


def test_training_plots_from_metrics_csv(tmp_path):
  writer = metrics_lib.MetricWriter(str(tmp_path), resume_step=0)
  for step in (10, 20, 30):
    writer.write(step, {"train/x12/loss": 1.0 / step, "train/x48/loss": 2.0 / step})
  writer.write(30, {"eval/det/ap": 0.7, "eval/crop/cascade_auc": 0.9})
  writer.close()
  files = model_report.training_plots(str(tmp_path), str(tmp_path / "out"))
  assert [f.rsplit("/", 1)[-1] for f in files] == ["training_loss.png", "training_val.png"]
  for f in files:
    with open(f, "rb") as fh:
      assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
