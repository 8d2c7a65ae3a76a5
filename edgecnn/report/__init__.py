"""The report: pages and cards rendered from what the stages wrote into a run directory.

    render_report(run_dir)              # report.html, plots/, MODEL_CARD.md
    compare_runs([run_a, run_b], out)   # compare.html across runs
    render_markdown(report)             # report.md's text

Adding a section to report.html is one function::

    @register_section("classes", order=65, title="Classes")
    def classes_section(ctx: ReportContext) -> str:
        return "<p>" + ", ".join(ctx.run.classes) + "</p>"

The report only reads and renders: it imports neither TensorFlow nor the data loader. What it
shows of the model's behaviour on images (misclassified gallery, Grad-CAM, layer table) is
written by the evaluate stage into ``RUN_DIR/findings/`` (``edgecnn.evaluate.findings``).
"""
from edgecnn.report.markdown import render_markdown
from edgecnn.report.model_card import render_model_card, write_model_card
from edgecnn.report.pareto import TradeoffPoint, pareto_front
from edgecnn.report.registry import ReportContext, Section, list_sections, register_section, unregister_section
from edgecnn.report.render import compare_runs, render_report
from edgecnn.report.run_files import RunFiles, read_run

__all__ = ["render_report", "compare_runs", "render_markdown", "write_model_card", "render_model_card",
           "register_section", "unregister_section", "list_sections", "Section", "ReportContext", "RunFiles",
           "read_run", "TradeoffPoint", "pareto_front"]
