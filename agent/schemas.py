"""JSON Schemas for what users write: load, compile, validate, and map key spellings.

The schema files live in the repository's top-level ``schemas/`` folder and are the one list of
field names: validation reads them, and so does key normalisation (Consul takes ``name``,
``NAME`` and ``check_id`` for ``Name`` and ``CheckID``), which walks their ``properties``.

A `SchemaSet` loads and compiles each file at most once; it holds no state beyond that cache,
and there is no module-level cache, so tests can point one at another folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Mapping

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT202012

from agent.errors import InvalidRequest

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# Our own annotation: the name a schema's root object goes by in error messages
# ("Service" gives `Service.Port`); catalog bodies have none, their fields stand alone.
PREFIX_KEYWORD = "x-field-prefix"


def field_path(*parts: str | int) -> str:
    """Join path parts the way our messages show them: ``Service.Checks[1].TTL``."""
    text = ""
    for part in parts:
        if part == "":
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text = f"{text}.{part}" if text else part
    return text


def fold(key: str) -> str:
    """The spelling-insensitive form of a field name: case and underscores ignored."""
    return key.replace("_", "").lower()


class SchemaSet:
    """The schema files of one folder, each read and compiled the first time it is used."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory if directory is not None else SCHEMA_DIR
        self._contents: dict[str, Mapping[str, Any]] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        # Cross-file "$ref"s ("check.json") are fetched through this registry, which reads
        # through the same per-instance cache, so each file is parsed once.
        self._registry: Registry = Registry(retrieve=self._retrieve)

    # -- loading --------------------------------------------------------------------------

    @staticmethod
    def _file_name(name: str) -> str:
        return name if name.endswith(".json") else f"{name}.json"

    def schema(self, name: str) -> Mapping[str, Any]:
        """The parsed contents of ``<name>.json`` (``name`` may carry the suffix)."""
        file_name = self._file_name(name)
        contents = self._contents.get(file_name)
        if contents is None:
            path = self._directory / file_name
            with path.open(encoding="utf-8") as handle:
                contents = json.load(handle)
            # A broken schema is our bug, not the user's: fail loudly here.
            Draft202012Validator.check_schema(contents)
            self._contents[file_name] = contents
        return contents

    def _retrieve(self, uri: str) -> Resource:
        try:
            contents = self.schema(uri)
        except FileNotFoundError as exc:
            raise NoSuchResource(ref=uri) from exc
        return Resource.from_contents(contents, default_specification=DRAFT202012)

    def _validator(self, name: str) -> Draft202012Validator:
        file_name = self._file_name(name)
        validator = self._validators.get(file_name)
        if validator is None:
            # The files carry no "$id": a reference such as "check.json#/$defs/duration"
            # resolves against the file name and is fetched through the registry.
            validator = Draft202012Validator(
                self.schema(file_name),
                registry=self._registry.with_resource(file_name, self._retrieve(file_name)),
                format_checker=None,
            )
            self._validators[file_name] = validator
        return validator

    # -- validation -----------------------------------------------------------------------

    def validate(self, name: str, document: Any) -> None:
        """Raise `InvalidRequest` naming the field of the most relevant error, if any."""
        error = best_match(self._validator(name).iter_errors(document))
        if error is None:
            return
        prefix = self.schema(name).get(PREFIX_KEYWORD, "")
        raise InvalidRequest(_describe(error, prefix))

    # -- key normalisation ----------------------------------------------------------------

    def normalize_keys(self, name: str, document: Any) -> Any:
        """A copy of ``document`` whose field names are spelled as the schema spells them.

        Names match when equal after dropping underscores and case (``check_id`` is
        ``CheckID``). Keys of user maps (any object the schema describes only through
        ``additionalProperties``, such as Meta) are kept as written; unknown keys are kept
        too, so validation reports them. A ``null`` value of a known field is dropped: Go's
        decoder, which Consul uses, treats it as "not given".
        """
        file_name = self._file_name(name)
        resolver = self._registry.resolver(base_uri=file_name)
        prefix = self.schema(file_name).get(PREFIX_KEYWORD, "")
        return self._normalize(document, self.schema(file_name), resolver, (prefix,))

    def _normalize(self, value: Any, schema: Any, resolver: Any, path: tuple) -> Any:
        if isinstance(value, list):
            items = [(branch["items"], branch_resolver)
                     for branch, branch_resolver in _branches(schema, resolver)
                     if isinstance(branch.get("items"), dict)]
            if not items:
                return list(value)
            item_schema, item_resolver = items[0]
            return [
                self._normalize(item, item_schema, item_resolver, path + (index,))
                for index, item in enumerate(value)
            ]
        if not isinstance(value, dict):
            return value
        properties: dict[str, tuple[Any, Any]] = {}
        additional: tuple[Any, Any] | None = None
        for branch, branch_resolver in _branches(schema, resolver):
            for key, sub in branch.get("properties", {}).items():
                properties.setdefault(key, (sub, branch_resolver))
            extra = branch.get("additionalProperties")
            if isinstance(extra, dict) and additional is None:
                additional = (extra, branch_resolver)
        spellings = _spellings(properties)
        result: dict[str, Any] = {}
        for key, item in value.items():
            canonical = key if key in properties else spellings.get(fold(key))
            if canonical is not None:
                if item is None:
                    continue
                sub, sub_resolver = properties[canonical]
                new_key, item = canonical, self._normalize(item, sub, sub_resolver,
                                                           path + (canonical,))
            elif additional is not None:
                new_key = key
                item = self._normalize(item, additional[0], additional[1], path + (key,))
            else:
                new_key = key
            if new_key in result:
                raise InvalidRequest(f'Duplicate field "{field_path(*path, new_key)}"')
            result[new_key] = item
        return result


def _branches(schema: Any, resolver: Any) -> Iterator[tuple[dict, Any]]:
    """The schema and every subschema that also describes the same value ($ref, *Of)."""
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if isinstance(ref, str):
        resolved = resolver.lookup(ref)
        yield from _branches(resolved.contents, resolved.resolver)
    yield schema, resolver
    for keyword in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(keyword, ()):
            yield from _branches(sub, resolver)


def _spellings(properties: Mapping[str, Any]) -> dict[str, str]:
    spellings: dict[str, str] = {}
    for key in properties:
        other = spellings.setdefault(fold(key), key)
        if other != key:
            # Two fields that differ only in case or underscores cannot be told apart.
            raise ValueError(f"schema fields {other!r} and {key!r} fold to the same name")
    return spellings


def _describe(error: ValidationError, prefix: str) -> str:
    path = field_path(prefix, *error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties", {})
        unknown = [key for key in error.instance if key not in known]
        if unknown:
            return f'Unknown field "{field_path(path, unknown[0])}"'
    if error.validator == "required":
        return f'Missing field "{field_path(path, *_missing(error))}"'
    if not path:
        return f"Invalid request body: {error.message}"
    return f'Invalid field "{path}": {error.message}'


def _missing(error: ValidationError) -> list[str]:
    wanted = error.validator_value or ()
    return [key for key in wanted if key not in error.instance][:1]
