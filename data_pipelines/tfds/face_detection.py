"""TFDS builder `face_detection`: images with face boxes, ignore flags and attributes.

Configs name the datasets FaceCraft knows; `root=` (or download_config.manual_dir with the
config's subdir below it) says where the files are:

  builder = tfds.builder("face_detection/cmu_mit", data_dir=out, root=".../cmu_mit_frontal")
  builder.download_and_prepare(file_format="array_record")
  source = tfds.data_source("face_detection/cmu_mit", data_dir=out)      # no TensorFlow
  record = common.example_to_record(source["test"][0])

Any other reader or root: `common.build("face_detection", reader, root, data_dir, splits)`.
Landmarks are not stored here (face_landmarks keeps them).
"""

from __future__ import annotations

from data_pipelines.tfds import common

WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


def _config(name: str, reader: str, subdir: str, splits, description: str,
            attribute_names: tuple[str, ...] = ()) -> common.FaceConfig:
  return common.FaceConfig(name=name, reader=reader, subdir=subdir, splits=tuple(splits),
                           attribute_names=attribute_names, description=description)


class FaceDetection(common.FaceBuilder):
  """Face detection sets as FaceRecords: image bytes, boxes [N, 4] xyxy, ignore, attributes."""

  WITH_LANDMARKS = False
  BUILDER_CONFIGS = [
      _config("cmu_mit", "cmu_mit", "cmu_mit_frontal", [("test", {})],
              "CMU+MIT frontal test set: 130 grayscale images, 511 faces."),
      _config("caltech_webfaces", "caltech_webfaces", "caltech_webfaces", [("train", {})],
              "Caltech 10,000 Web Faces: 7092 images, 10524 faces (boxes from 4 points)."),
      _config("wider_face", "wider_face", "wider_face",
              [("train", {"split": "train"}), ("validation", {"split": "val"})],
              "WIDER FACE with its six per-face attributes.", WIDER_ATTRIBUTES),
      _config("fddb", "fddb", "fddb", [("test", {})],
              "FDDB, all ten folds (ellipses kept in meta)."),
      _config("afw", "afw", "afw", [("test", {})], "Annotated Faces in the Wild."),
      _config("pascal_faces", "pascal_faces", "pascal_faces", [("test", {})],
              "PASCAL faces (difficult faces are ignored).", ("truncated", "difficult")),
      _config("dlib_faces", "dlib_xml", "dlib_faces/examples/faces",
              [("train", {"split": "training"}), ("test", {"split": "testing"})],
              "dlib's example faces (dlib XML)."),
  ]


BUILDER = FaceDetection
