"""Students: a timm/torchvision backbone with one linear head of C class + E extra outputs."""

from makd_cli.students.build import STUDENTS, StudentNet, build_student, student_from_checkpoint

__all__ = ["STUDENTS", "StudentNet", "build_student", "student_from_checkpoint"]
