"""Luigi tasks only: `luigi --module tasks RunAll` imports this package. The work itself
lives in pipeline/, models/ and cache/."""
from tasks import interrupt
from tasks.check import CheckConfig
from tasks.config import default_gpu_resource
from tasks.data import PrepareDataset
from tasks.export import ExportCacheHDF5
from tasks.report import Report, RunAll
from tasks.show import ShowConfig
from tasks.student import EvaluateStudent, TrainStudent
from tasks.teacher import CacheTeacher, EvaluateTeacher, FineTuneTeacher, TeacherCheckpoint
from tasks.verify import VerifyData

__all__ = ["CheckConfig", "ShowConfig", "PrepareDataset", "ExportCacheHDF5", "FineTuneTeacher", "TeacherCheckpoint",
           "CacheTeacher", "EvaluateTeacher", "TrainStudent", "EvaluateStudent", "Report", "RunAll", "VerifyData"]

default_gpu_resource()
interrupt.install()  # in the process that imports the tasks: Luigi's, and the workers it forks
