"""`workbench model import|list|info|delete`."""

from __future__ import annotations

from workbench.cli.options import list_parser
from workbench.cli.output import Output, progress_printer, rows
from workbench.client import WorkbenchClient
from workbench.v1 import common_pb2

FRAMEWORK_FILES = {
    "cfg": common_pb2.MODEL_FILE_ROLE_DARKNET_CFG, "weights": common_pb2.MODEL_FILE_ROLE_DARKNET_WEIGHTS,
    "names": common_pb2.MODEL_FILE_ROLE_LABELS, "file": common_pb2.MODEL_FILE_ROLE_MODEL,
    "xml": common_pb2.MODEL_FILE_ROLE_IR_XML, "bin": common_pb2.MODEL_FILE_ROLE_IR_BIN,
    "archive": common_pb2.MODEL_FILE_ROLE_ARCHIVE, "params": common_pb2.MODEL_FILE_ROLE_PARAMS,
}


def add_parser(commands) -> None:
    parser = commands.add_parser("model", help="models")
    parser.set_defaults(handler=run)
    model = parser.add_subparsers(dest="action", required=True)
    imp = model.add_parser("import", help="upload model files and convert them to OpenVINO IR")
    imp.add_argument("name")
    imp.add_argument("--framework", default="", choices=["", "darknet", "onnx", "tensorflow", "tflite", "paddle",
                                                          "openvino"], help="detected when left out")
    for flag in FRAMEWORK_FILES:
        imp.add_argument(f"--{flag}", default="")
    imp.add_argument("--input-shape", action="append", default=[], help="[NAME=]SHAPE, e.g. [1,3,416,416]")
    imp.add_argument("--mean", default="", help="comma-separated mean values")
    imp.add_argument("--scale", default="", help="comma-separated scale values")
    imp.add_argument("--reverse-input-channels", action="store_true")
    imp.add_argument("--fp16", action="store_true", help="compress weights to FP16")
    imp.add_argument("--output", action="append", default=[], help="output tensor to keep (repeatable)")
    list_parser(model)
    model.add_parser("info").add_argument("id")
    model.add_parser("delete").add_argument("id")


def model_rows(models) -> None:
    rows(["ID", "NAME", "FRAMEWORK", "TASK", "TYPE", "PARAMS", "GFLOPS"],
         [[m.id, m.name, common_pb2.Framework.Name(m.framework).removeprefix("FRAMEWORK_").lower(),
           m.artifact.analysis.task, m.artifact.analysis.model_type or "-",
           f"{m.artifact.analysis.parameter_count / 1e6:.1f}M", f"{m.artifact.analysis.gflops:.2f}"] for m in models])


def model_info(model) -> None:
    a = model.artifact.analysis
    print(f"{model.id}  {model.name}  ({common_pb2.Framework.Name(model.framework).removeprefix('FRAMEWORK_').lower()})")
    print(f"task {a.task}, type {a.model_type or '-'}, {a.parameter_count:,} parameters, {a.gflops:.2f} GFLOPs, "
          f"{'quantized' if a.quantized else 'not quantized'}")
    print("weights: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(a.weight_bytes.items())))
    rows(["", "NAME", "SHAPE", "TYPE", "LAYOUT"],
         [["input", t.name, t.shape, t.element_type, t.layout or "-"] for t in a.inputs]
         + [["output", t.name, t.shape, t.element_type, t.layout or "-"] for t in a.outputs])
    for t in a.inputs:  # a dynamic or user-given shape: what the analysis took and why
        if t.shape_source and t.shape_source != "the model":
            print(f"input {t.name} analyzed at {t.analyzed_shape}: {t.shape_source}")
    print(f"IR: s3://{model.artifact.xml.bucket}/{model.artifact.xml.key}")


def run(args, out: Output, client: WorkbenchClient) -> int:
    if args.action == "import":
        files = {role: getattr(args, flag) for flag, role in FRAMEWORK_FILES.items() if getattr(args, flag)}
        framework = common_pb2.Framework.Value(f"FRAMEWORK_{args.framework.upper()}") if args.framework else 0
        options = common_pb2.ConvertOptions(
            input_shapes=dict(s.split("=", 1) if "=" in s else ("", s) for s in args.input_shape),
            reverse_input_channels=args.reverse_input_channels, compress_to_fp16=args.fp16,
            mean_values=[float(v) for v in args.mean.split(",")] if args.mean else [],
            scale_values=[float(v) for v in args.scale.split(",")] if args.scale else [],
            outputs=args.output,
        )
        job = client.import_model(args.name, files, framework=framework, options=options)
        done = client.wait_job(job.id, on_event=progress_printer(quiet=args.json))
        model = client.get_model(done.output.model_id)
        out.result(model, lambda: model_info(model))
    elif args.action == "list":
        models = list(client.list_models(oldest_first=args.oldest_first))
        out.result(models, lambda: model_rows(models))
    elif args.action == "info":
        model = client.get_model(args.id)
        out.result(model, lambda: model_info(model))
    elif args.action == "delete":
        client.delete_model(args.id)
        out.result({"deleted": args.id}, lambda: print(f"deleted {args.id}"))
    return 0
