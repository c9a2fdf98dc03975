"""RPN + Fast R-CNN training (FaceCraft §5): targets, schedules (joint, four_step)."""
