"""The Cockpit instruments, one file each, in the order they run and decode."""

from instrument.cockpit.instruments.alpha import Alpha
from instrument.cockpit.instruments.cabs import CABS
from instrument.cockpit.instruments.distance import Distance
from instrument.cockpit.instruments.early_stopping import EarlyStopping
from instrument.cockpit.instruments.grad_hist_1d import GradHist1d
from instrument.cockpit.instruments.grad_hist_2d import GradHist2d
from instrument.cockpit.instruments.hess_max_ev import HessMaxEV
from instrument.cockpit.instruments.hess_trace import HessTrace
from instrument.cockpit.instruments.inner_test import InnerTest
from instrument.cockpit.instruments.mean_gsnr import MeanGSNR
from instrument.cockpit.instruments.norm_test import NormTest
from instrument.cockpit.instruments.ortho_test import OrthoTest
from instrument.cockpit.instruments.tic_diag import TICDiag
from instrument.cockpit.instruments.tic_trace import TICTrace
from instrument.registries import unique

# probe users first in pre_step order does not matter (the probe runs once, on first use)
COCKPIT_INSTRUMENTS = unique(
    (Distance, Alpha, NormTest, InnerTest, OrthoTest, GradHist1d, GradHist2d, HessTrace, TICDiag,
     TICTrace, HessMaxEV, MeanGSNR, CABS, EarlyStopping), lambda cls: cls.name,
    "Cockpit instruments")

__all__ = [c.__name__ for c in COCKPIT_INSTRUMENTS] + ["COCKPIT_INSTRUMENTS"]
