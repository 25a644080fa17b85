"""The methods that ship with iqa: one registration line each (a new method adds its own)."""

from iqa.methods.clipiqa.method import CLIP_IQA_METHOD
from iqa.methods.clipiqa_plus.method import CLIP_IQA_PLUS_METHOD
from iqa.methods.grmp.method import GRMP_METHOD
from iqa.methods.maclip.method import MA_CLIP_METHOD
from iqa.methods.qualiclip.method import QUALICLIP_METHOD
from iqa.methods.registry import register

register(CLIP_IQA_METHOD)
register(GRMP_METHOD)
register(CLIP_IQA_PLUS_METHOD)
register(MA_CLIP_METHOD)
register(QUALICLIP_METHOD)
