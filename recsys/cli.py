"""The `recsys` command line.

Exit codes: 0 success, 2 bad input or configuration (with a message naming what is wrong),
1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from recsys import __version__

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT = 0, 1, 2
DEFAULT_STORE = "saved_models"

logger = logging.getLogger("recsys")


def default_store():
    return os.environ.get("RECSYS_STORE", DEFAULT_STORE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys",
        description="Store intelligence: buy probability, recommendations and text "
        "classification on Keras/KerasHub.",
    )
    parser.add_argument("--version", action="version", version=f"recsys {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="run the whole store on synthetic data")
    demo.add_argument("--out", default="demo", help="output folder (default: demo)")
    demo.add_argument("--no-serve", action="store_true", help="do not start the service")

    data = sub.add_parser("data", help="generate or check data files")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True
    synth = data_sub.add_parser("synth", help="write the synthetic store as Parquet files")
    synth.add_argument("--out", required=True, help="output folder")
    synth.add_argument("--products", type=int, default=2000)
    synth.add_argument("--users", type=int, default=3000)
    synth.add_argument("--seed", type=int, default=0)
    check = data_sub.add_parser("check", help="validate a catalog, events or reviews file")
    check.add_argument("file")
    check.add_argument("--kind", required=True, choices=["catalog", "events", "reviews"])
    check.add_argument("--catalog", help="with --kind events: check product ids against it")
    check.add_argument(
        "--drop-unknown", action="store_true", help="count and drop events of unknown products"
    )

    train = sub.add_parser("train", help="train a model from a YAML config and publish it")
    train.add_argument("config", help="YAML config (see training/configs/)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override a config value (repeatable)",
    )
    train.add_argument("--store", default=None, help="model store (default: ./saved_models)")
    train.add_argument("--run-dir", default=None, help="logs, checkpoints and report")
    train.add_argument("--no-export", action="store_true", help="train and evaluate only")

    models = sub.add_parser("models", help="list the models in the store")
    models.add_argument("--store", default=None, help="model store (default: ./saved_models)")

    serve = sub.add_parser("serve", help="serve the models in the store over HTTP (gunicorn)")
    serve.add_argument("--store", default=None, help="model store (default: ./saved_models)")
    serve.add_argument("--bind", default=None, help="HOST:PORT (default: 127.0.0.1:8000)")
    serve.add_argument("--workers", type=int, default=None, help="worker processes (default: 2)")
    serve.add_argument("--threads", type=int, default=None, help="threads per worker (default: 8)")
    serve.add_argument("--catalog", default=None, help="catalog file for ids not in a model")

    from recsys import batch

    batch.add_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from recsys.config import ConfigError
    from recsys.data.errors import DataError

    try:
        return _dispatch(args)
    except (DataError, ConfigError) as e:
        print(f"recsys: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("recsys: interrupted", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    if args.command == "data":
        from recsys import commands_data

        if args.data_command == "synth":
            return commands_data.synth(args.out, args.products, args.users, args.seed)
        return commands_data.check(args.file, args.kind, args.catalog, args.drop_unknown)
    if args.command == "demo":
        from recsys import demo

        return demo.run(args.out, serve=not args.no_serve)
    if args.command == "train":
        from training import train

        return train.run(
            args.config,
            args.overrides,
            store=args.store or default_store(),
            run_dir=args.run_dir,
            export=not args.no_export,
        )
    if args.command == "models":
        from recsys import store

        return store.print_models(args.store or default_store())
    if args.command == "serve":
        from serving import command

        return command.run(args.store, args.bind, args.workers, args.threads, args.catalog)
    if args.command == "score":
        from recsys import batch

        return batch.run(batch.request_from_args(args))
    raise AssertionError(args.command)


if __name__ == "__main__":
    raise SystemExit(main())
