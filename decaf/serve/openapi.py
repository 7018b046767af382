"""The OpenAPI 3.1 description of the JSON API, written out by hand (the bodies are images, not
JSON models, so there is nothing to generate it from); tests/test_serve.py holds it equal to the
app's routes."""

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string", "examples": ["upload_too_large"]}, "message": {"type": "string"}}}}}
IMAGE_ERROR = {"type": "object", "properties": {"index": {"type": "integer"}, "filename": {"type": "string"},
                                                "error": ERROR["properties"]["error"]}}
TIMING = {"type": "object", "description": "the request's time: decoding, waiting, and its share of each "
          "minibatch's forward pass split by layer group (conv, fc, pool, neuron, LRN, norm, other)",
          "properties": {"total_ms": {"type": "number"}, "decode_ms": {"type": "number"},
                         "queue_ms": {"type": "number"}, "forward_ms": {"type": "number"},
                         "by_group": {"type": "object", "additionalProperties": {"type": "number"}},
                         "minibatches": {"type": "array", "items": {"type": "object"}}}}
IMAGES_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {
        "type": "array", "items": {"type": "string", "format": "binary"},
        "description": "one or several image files (JPEG, PNG, GIF, BMP, WebP, TIFF, PPM)"}}}},
    "image/*": {"schema": {"type": "string", "format": "binary"}}}}
CLASS = {"type": "object", "properties": {"index": {"type": "integer"}, "name": {"type": "string"},
                                         "prob": {"type": "number"}}}
CLASSIFY_RESULT = {"type": "object", "properties": {
    "model": {"type": "string"}, "timing": TIMING,
    "results": {"type": "array", "items": {"oneOf": [IMAGE_ERROR, {"type": "object", "properties": {
        "index": {"type": "integer"}, "filename": {"type": "string"},
        "top": {"type": "array", "items": CLASS}}}]}}}}
BLOB = {"name": "blob", "in": "query", "required": False, "schema": {"type": "string"},
        "description": "a blob name (repeat it or separate names by commas); default: the blob a linear "
                       "classifier reads (EfficientNet-Lite0: pool)"}
OVERSAMPLE = {"name": "oversample", "in": "query", "schema": {"type": "boolean", "default": False},
              "description": "the mean over 10 crops (corners and centre, mirrored)"}


def _errors(*codes):
    text = {400: "bad parameter, no image or malformed body", 413: "upload too large or too many images",
            415: "not multipart/form-data nor an image body", 422: "the image cannot be used",
            503: "queue full (overloaded) or request timeout; see Retry-After"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def openapi_document(limits):
    lim = limits.to_dict()
    limits_text = (f"Limits: {lim['max_upload_bytes']} bytes per request, {lim['max_images']} images per request, "
                   f"{lim['max_pixels']} pixels per image (checked from the header before decoding), "
                   f"{lim['max_queue']} images queued, {lim['request_timeout']} s per request.")
    return {
        "openapi": "3.1.0",
        "info": {"title": "decaf serve", "version": "1",
                 "description": "Classify images and extract DeCAF features with one decaf net. " + limits_text},
        "paths": {
            "/v1/classify": {"post": {
                "summary": "Top-k classes of one or many images",
                "parameters": [{"name": "top", "in": "query", "schema": {"type": "integer", "default": 5}}, OVERSAMPLE],
                "requestBody": IMAGES_BODY,
                "responses": {"200": {"description": "one result per image, in order; a bad image has `error` "
                                      "instead of `top`",
                                      "content": {"application/json": {"schema": CLASSIFY_RESULT}}},
                              **_errors(400, 413, 415, 503)}}},
            "/v1/features": {"post": {
                "summary": "Blobs (DeCAF features) of each image",
                "parameters": [BLOB, OVERSAMPLE, {"name": "format", "in": "query",
                                                  "schema": {"enum": ["json", "npy"], "default": "json"},
                                                  "description": "npy (or Accept: application/x-npy): one blob, "
                                                  "(N, ...) float32 for the readable images; X-Decaf-Rows lists "
                                                  "their indices, X-Decaf-Errors the others"}],
                "requestBody": IMAGES_BODY,
                "responses": {"200": {"description": "per image {blob: {shape, data}} (or .npy)", "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/x-npy": {"schema": {"type": "string", "format": "binary"}}}},
                    **_errors(400, 413, 415, 503)}}},
            "/v1/activations": {"post": {
                "summary": "One image's feature maps in a blob, as a PNG grid (the page's layer view)",
                "parameters": [dict(BLOB, required=True), {"name": "max_maps", "in": "query",
                                                           "schema": {"type": "integer", "default": 64}}],
                "requestBody": IMAGES_BODY,
                "responses": {"200": {"description": "a PNG", "content": {"image/png": {}}},
                              **_errors(400, 413, 415, 422, 503)}}},
            "/v1/filters.png": {"get": {
                "summary": "The first convolution's filters, as a PNG grid",
                "responses": {"200": {"description": "a PNG", "content": {"image/png": {}}}}}},
            "/v1/model": {"get": {
                "summary": "The model: spec, preprocessing recipe, labels, layers and the server's limits",
                "responses": {"200": {"description": "the model", "content": {"application/json": {}}}}}},
            "/healthz": {"get": {
                "summary": "Liveness: 200 while the inference thread runs, else 503",
                "responses": {"200": {"description": "up", "content": {"application/json": {}}},
                              "503": {"description": "down", "content": {"application/json": {}}}}}},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
        },
    }
