"""TFDS builder `face_landmarks`: face_detection's fields plus landmarks of one scheme.

Each config fixes the scheme (so K): landmarks float32 [N, K, 2], landmark_mask bool [N, K] and
the per-example `scheme` ("" for a record without points). Usage as in face_detection:

  tfds.builder("face_landmarks/300w_train", data_dir=out, root=".../300w_train")
  common.build("face_landmarks", reader, root, data_dir, splits)   # any reader
"""

from __future__ import annotations

from data_pipelines.tfds import common

# The 40 attributes of list_attr_celeba.txt (the header names the celeba reader keeps).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")


def _config(name: str, reader: str, subdir: str, scheme: str, splits, description: str,
            attribute_names: tuple[str, ...] = ()) -> common.FaceConfig:
  return common.FaceConfig(name=name, reader=reader, subdir=subdir, splits=tuple(splits),
                           landmark_scheme=scheme, attribute_names=attribute_names,
                           description=description)


class FaceLandmarks(common.FaceBuilder):
  """Landmark sets as FaceRecords: face_detection's fields + landmarks [N, K, 2] + mask."""

  WITH_LANDMARKS = True
  BUILDER_CONFIGS = [
      _config("300w_train", "pts68", "300w_train", "ibug68", [("train", {})],
              "300-W training faces (AFW, HELEN, LFPW), 68 iBUG points."),
      _config("youtube68", "youtube68", "youtube_faces_68pt", "ibug68", [("train", {})],
              "YouTube Faces frames with 68 points."),
      _config("cofw", "cofw", "cofw", "cofw29",
              [("train", {"split": "train"}), ("test", {"split": "test"})],
              "COFW, 29 points with occlusion flags."),
      _config("aflw", "aflw", "aflw", "aflw21", [("train", {})], "AFLW, 21 points.",
              ("male", "glasses", "occluded")),
      _config("celeba", "celeba", "celeba", "five",
              [("train", {"split": "train"}), ("validation", {"split": "val"}),
               ("test", {"split": "test"})],
              "CelebA: five points and 40 attributes.", CELEBA_ATTRIBUTES),
      _config("caltech_webfaces", "caltech_webfaces", "caltech_webfaces", "caltech4",
              [("train", {})], "Caltech Web Faces: eyes, nose, mouth."),
      _config("afw", "afw", "afw", "cmu6", [("test", {})],
              "AFW with its six points per face (stored in the cmu6 order)."),
      _config("cmu_mit", "cmu_mit", "cmu_mit_frontal", "cmu6", [("test", {})],
              "CMU+MIT frontal faces with their 6 points."),
      _config("dlib_faces", "dlib_xml", "dlib_faces/examples/faces", "ibug68",
              [("train", {"split": "training"}), ("test", {"split": "testing"})],
              "dlib's example faces with 68 points."),
  ]


BUILDER = FaceLandmarks
