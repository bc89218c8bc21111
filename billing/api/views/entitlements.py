from __future__ import annotations

import json
import re
from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from billing.api.base import ApiView
from billing.api.fields import AmountField, ExternalIdField, MetadataField, StrictBooleanField, StrictIntegerField, TimestampField
from billing.api.errors import error_body, flatten_validation
from billing.errors import BillingError, NotFound, ValidationFailed
from billing.models import Balance, Feature
from billing.money import MAX_AMOUNT
from billing.selectors.catalog import product_get
from billing.selectors.customers import customer_get
from billing.selectors.entitlements import usage_aggregate
from billing.services.entitlements import entitlement_check, lock_finalize, usage_track
from billing.services.usage_batch import MAX_BATCH, TrackEvent, usage_track_batch
from billing.services.grants import (
    balance_create,
    balance_update,
    entity_create,
    entity_delete,
    product_spend_cap_set,
    spend_cap_set,
)

FeatureSlugField = serializers.SlugField


class LockIn(serializers.Serializer):
    enabled = StrictBooleanField()
    expiresAt = TimestampField(required=False, source="expires_at")


# The hot routes' bodies are checked first by plain code that accepts only what
# the serializer accepts, giving the same validated data (a test compares the two
# on generated bodies); anything else (an error, a lock, a timestamp) goes
# through the serializer, so every 422 body comes from it.
_ID_END = r"[^\x00-\x20\x7f/\ud800-\udfff]"  # fields.validate_external_id, less lone surrogates
_PLAIN_ID = re.compile(rf"{_ID_END}(?:[^\x00-\x1f\x7f/\ud800-\udfff]{{0,253}}{_ID_END})?")
_PLAIN_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}")
_PLAIN_KEY = re.compile(r"[^\x00\ud800-\udfff]{1,255}")


def _plain_id(value) -> bool:
    return type(value) is str and _PLAIN_ID.fullmatch(value) is not None


def _plain_common(data) -> dict | None:
    """customer, feature and entityId of a check or track body, or None."""
    if type(data) is not dict:
        return None
    customer, feature = data.get("customer"), data.get("feature")
    if not _plain_id(customer) or type(feature) is not str or _PLAIN_SLUG.fullmatch(feature) is None:
        return None
    v = {"customer": customer, "feature": feature}
    if "entityId" in data:
        if not _plain_id(data["entityId"]):
            return None
        v["entity_id"] = data["entityId"]
    return v


class CheckIn(serializers.Serializer):
    customer = ExternalIdField()
    feature = FeatureSlugField(max_length=100)
    requiredBalance = StrictIntegerField(min_value=1, max_value=MAX_AMOUNT, required=False, default=1, source="required")
    sendEvent = StrictBooleanField(required=False, default=False, source="send_event")
    entityId = ExternalIdField(required=False, source="entity_id")
    lock = LockIn(required=False)

    @staticmethod
    def plain(data) -> dict | None:
        """The validated body of a well-formed check without a lock, or None."""
        v = _plain_common(data)
        if v is None or "lock" in data:
            return None
        required, send_event = data.get("requiredBalance", 1), data.get("sendEvent", False)
        if type(required) is not int or not 1 <= required <= MAX_AMOUNT or type(send_event) is not bool:
            return None
        v["required"], v["send_event"] = required, send_event
        return v


class CheckOut(serializers.Serializer):
    allowed = serializers.BooleanField()
    code = serializers.ChoiceField(choices=["ok", "insufficient_balance", "feature_not_included", "spend_cap_reached"])
    customerId = serializers.CharField()
    feature = serializers.CharField()
    balance = serializers.IntegerField(allow_null=True)
    granted = serializers.IntegerField(allow_null=True)
    usage = serializers.IntegerField(allow_null=True)
    unlimited = serializers.BooleanField()
    lockId = serializers.CharField(required=False)


def _balance_fields(balance) -> dict:
    if balance is None:
        return {"balance": None, "granted": None, "usage": None, "unlimited": False}
    return {"balance": balance.remaining, "granted": balance.granted, "usage": balance.usage, "unlimited": balance.unlimited}


class CheckView(ApiView):
    """Publishable keys may ask (read-only); deducting or locking needs a secret key."""

    publishable_allowed = True
    audit_action = None  # the hot path writes usage events, not audit rows

    @extend_schema(operation_id="check", request=CheckIn, responses={200: CheckOut})
    def post(self, request):
        v = self.validated(CheckIn)
        lock = v.get("lock") or {}
        if (v["send_event"] or lock.get("enabled")) and request.auth.type != "secret":
            raise PermissionDenied("sendEvent and lock need a secret key.")
        result = entitlement_check(
            customer_id=v["customer"], feature_slug=v["feature"], required=v["required"], now=timezone.now(),
            entity_id=v.get("entity_id"), send_event=v["send_event"], lock=bool(lock.get("enabled")),
            lock_expires_at=lock.get("expires_at"),
        )
        body = {"allowed": result.allowed, "code": result.code, "customerId": v["customer"], "feature": v["feature"],
                **_balance_fields(result.balance)}
        if result.lock_id:
            body["lockId"] = result.lock_id
        return Response(body)


class TrackIn(serializers.Serializer):
    customer = ExternalIdField()
    feature = FeatureSlugField(max_length=100)
    amount = StrictIntegerField(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT, required=False, default=1)
    entityId = ExternalIdField(required=False, source="entity_id")
    idempotencyKey = serializers.CharField(max_length=255, required=False, source="idempotency_key")
    properties = MetadataField(required=False)
    timestamp = TimestampField(required=False)

    def validate_amount(self, value):
        if value == 0:
            raise serializers.ValidationError("must not be zero")
        return value

    def validate_timestamp(self, value):
        now = timezone.now()
        if not now - timedelta(days=366) <= value <= now + timedelta(hours=1):
            raise serializers.ValidationError("must be within the last 366 days and at most an hour ahead")
        return value

    @staticmethod
    def plain(data) -> dict | None:
        """The validated body of a well-formed track without a timestamp, or None."""
        v = _plain_common(data)
        if v is None or "timestamp" in data:
            return None
        amount = data.get("amount", 1)
        if type(amount) is not int or amount == 0 or not -MAX_AMOUNT <= amount <= MAX_AMOUNT:
            return None
        v["amount"] = amount
        if "idempotencyKey" in data:
            key = data["idempotencyKey"]
            if type(key) is not str or _PLAIN_KEY.fullmatch(key) is None or key.strip() != key:
                return None
            v["idempotency_key"] = key
        if "properties" in data:
            properties = data["properties"]
            if type(properties) is not dict or len(properties) > 50 or len(json.dumps(properties)) > 16 * 1024:
                return None
            v["properties"] = properties
        return v


class TrackOut(serializers.Serializer):
    eventId = serializers.CharField()
    balance = serializers.IntegerField()
    usage = serializers.IntegerField()


class TrackView(ApiView):
    audit_action = None

    @extend_schema(operation_id="track", request=TrackIn, responses={200: TrackOut})
    def post(self, request):
        v = self.validated(TrackIn)
        result = usage_track(
            customer_id=v["customer"], feature_slug=v["feature"], amount=v["amount"], now=timezone.now(),
            entity_id=v.get("entity_id"), idempotency_key=v.get("idempotency_key"), properties=v.get("properties"),
            timestamp=v.get("timestamp"),
        )
        response = Response({"eventId": f"uev_{result.event.pk}", "balance": result.balance.remaining, "usage": result.balance.usage})
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class TrackBatchIn(serializers.Serializer):
    events = TrackIn(many=True, help_text="1 to 1,000 track bodies; each is applied or refused on its own")


class TrackBatchResultOut(serializers.Serializer):
    eventId = serializers.CharField(required=False)
    balance = serializers.IntegerField(required=False)
    usage = serializers.IntegerField(required=False)
    replayed = serializers.BooleanField(required=False, help_text="a repeated idempotencyKey: the first event's id")
    error = serializers.DictField(required=False, help_text="{code, message, details}, as the error of a single track")


class TrackBatchOut(serializers.Serializer):
    results = TrackBatchResultOut(many=True)


def _track_event(data) -> TrackEvent | dict:
    """One event of a batch as the service takes it, or its error body (single track's 422)."""
    v = TrackIn.plain(data)
    if v is None:
        serializer = TrackIn(data=data)
        if not serializer.is_valid():
            details = flatten_validation(serializer.errors)
            return error_body("VALIDATION_ERROR", f"{details[0]['field']}: {details[0]['message']}", details)
        v = serializer.validated_data
    return TrackEvent(customer=v["customer"], feature=v["feature"], amount=v["amount"], entity_id=v.get("entity_id"),
                      idempotency_key=v.get("idempotency_key"), properties=v.get("properties"),
                      timestamp=v.get("timestamp"))


class TrackBatchView(ApiView):
    """Up to 1,000 track events; each answers as single track would, in input order.
    A malformed envelope (not a list, empty, too long) is a 422 for the whole call."""

    audit_action = None

    @extend_schema(operation_id="trackBatch", request=TrackBatchIn, responses={200: TrackBatchOut})
    def post(self, request):
        data = request.data
        raw = data.get("events") if isinstance(data, dict) else None
        if type(raw) is not list:
            raise ValidationFailed("events", "must be a list of track bodies")
        if not 1 <= len(raw) <= MAX_BATCH:
            raise ValidationFailed("events", f"must hold 1 to {MAX_BATCH} events, not {len(raw)}")
        checked = [_track_event(item) for item in raw]
        valid = [i for i, item in enumerate(checked) if isinstance(item, TrackEvent)]
        outcomes = usage_track_batch(events=[checked[i] for i in valid], now=timezone.now()) if valid else []
        results = list(checked)
        for index, outcome in zip(valid, outcomes):
            if isinstance(outcome, BillingError):
                results[index] = error_body(outcome.code, outcome.message, outcome.details)
            else:
                results[index] = {"eventId": f"uev_{outcome.event_id}", "balance": outcome.remaining,
                                  "usage": outcome.usage, "replayed": outcome.replayed}
        return Response({"results": results})


class FinalizeIn(serializers.Serializer):
    lockId = serializers.CharField(max_length=32, source="lock_id")
    action = serializers.ChoiceField(choices=["confirm", "release"])
    overrideValue = StrictIntegerField(min_value=0, max_value=MAX_AMOUNT, required=False, source="override_value")


class FinalizeOut(serializers.Serializer):
    lockId = serializers.CharField()
    status = serializers.CharField()
    consumed = serializers.IntegerField()
    released = serializers.IntegerField()
    balance = serializers.IntegerField()
    overdraft = serializers.BooleanField()


class FinalizeLockView(ApiView):
    audit_action = {"POST": "lock.finalize"}

    @extend_schema(operation_id="finalizeLock", request=FinalizeIn, responses={200: FinalizeOut})
    def post(self, request):
        v = self.validated(FinalizeIn)
        if v["action"] == "release" and "override_value" in v:
            raise ValidationFailed("overrideValue", "only with confirm")
        result = lock_finalize(lock_id=v["lock_id"], action=v["action"], override_value=v.get("override_value"), now=timezone.now())
        self.audit_target = ("lock", result.lock.pk)
        lock = result.lock
        return Response({"lockId": lock.pk, "status": lock.status, "consumed": lock.consumed, "released": lock.released,
                         "balance": result.balance.remaining, "overdraft": result.overdraft})


class BalanceIn(serializers.Serializer):
    customer = ExternalIdField()
    feature = FeatureSlugField(max_length=100)
    grantedBalance = AmountField(min_value=1, source="granted")
    expiresAt = TimestampField(required=False, source="expires_at")
    entityId = ExternalIdField(required=False, source="entity_id")


class BalancePatchIn(serializers.Serializer):
    customer = ExternalIdField()
    feature = FeatureSlugField(max_length=100)
    usage = AmountField(required=False)
    balance = AmountField(required=False, source="remaining")
    entityId = ExternalIdField(required=False, source="entity_id")

    def validate(self, attrs):
        if ("usage" in attrs) == ("remaining" in attrs):
            raise serializers.ValidationError({"usage": "give exactly one of usage or balance"})
        return attrs


class BalanceOut(serializers.Serializer):
    customer = serializers.CharField()
    feature = serializers.CharField()
    entityId = serializers.CharField(allow_null=True)
    granted = serializers.IntegerField()
    usage = serializers.IntegerField()
    remaining = serializers.IntegerField()
    reserved = serializers.IntegerField()
    unlimited = serializers.BooleanField()


def render_balance(balance, customer_id: str, feature: str, entity_id: str | None) -> dict:
    return {"customer": customer_id, "feature": feature, "entityId": entity_id, "granted": balance.granted,
            "usage": balance.usage, "remaining": balance.remaining, "reserved": balance.reserved, "unlimited": balance.unlimited}


class BalanceView(ApiView):
    audit_action = {"POST": "balance.create", "PATCH": "balance.update"}

    @extend_schema(operation_id="createBalance", request=BalanceIn, responses={201: BalanceOut})
    def post(self, request):
        v = self.validated(BalanceIn)
        customer = customer_get(external_id=v["customer"])
        balance = balance_create(customer=customer, feature_slug=v["feature"], granted=v["granted"],
                                 expires_at=v.get("expires_at"), entity_id=v.get("entity_id"), now=timezone.now())
        self.audit_target = ("customer", customer.external_id)
        return Response(render_balance(balance, v["customer"], v["feature"], v.get("entity_id")), status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="updateBalance", request=BalancePatchIn, responses={200: BalanceOut})
    def patch(self, request):
        v = self.validated(BalancePatchIn)
        customer = customer_get(external_id=v["customer"])
        balance = balance_update(customer=customer, feature_slug=v["feature"], usage=v.get("usage"),
                                 remaining=v.get("remaining"), entity_id=v.get("entity_id"), now=timezone.now())
        self.audit_target = ("customer", customer.external_id)
        return Response(render_balance(balance, v["customer"], v["feature"], v.get("entity_id")))


class EntityIn(serializers.Serializer):
    entityId = ExternalIdField(source="entity_id")
    featureId = FeatureSlugField(max_length=100, source="feature")
    name = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)


class EntityOut(serializers.Serializer):
    id = serializers.CharField(source="external_id")
    name = serializers.CharField()
    featureId = serializers.CharField(source="feature.slug")
    createdAt = serializers.DateTimeField(source="created_at")


class EntityCollectionView(ApiView):
    audit_action = {"POST": "entity.create"}

    @extend_schema(operation_id="createEntity", request=EntityIn, responses={201: EntityOut})
    def post(self, request, customer_id: str):
        customer = customer_get(external_id=customer_id)
        v = self.validated(EntityIn)
        entity = entity_create(customer=customer, entity_id=v["entity_id"], feature_slug=v["feature"], name=v["name"], now=timezone.now())
        self.audit_target = ("entity", f"{customer_id}/{entity.external_id}")
        return Response(EntityOut(entity).data, status=status.HTTP_201_CREATED)

    @extend_schema(operation_id="listEntities", responses={200: EntityOut(many=True)})
    def get(self, request, customer_id: str):
        customer = customer_get(external_id=customer_id)
        entities = customer.entities.filter(deleted_at__isnull=True).select_related("feature").order_by("created_at", "id")
        return Response({"data": EntityOut(entities, many=True).data})


class EntityDetailView(ApiView):
    audit_action = {"DELETE": "entity.delete"}

    @extend_schema(operation_id="deleteEntity", request=None, responses={204: None})
    def delete(self, request, customer_id: str, entity_id: str):
        customer = customer_get(external_id=customer_id)
        entity_delete(customer=customer, entity_id=entity_id, now=timezone.now())
        self.audit_target = ("entity", f"{customer_id}/{entity_id}")
        return Response(status=status.HTTP_204_NO_CONTENT)


class SpendCapIn(serializers.Serializer):
    customer = ExternalIdField()
    feature = FeatureSlugField(max_length=100)
    cap = AmountField(allow_null=True)


class ProductSpendCapIn(serializers.Serializer):
    feature = FeatureSlugField(max_length=100)
    cap = AmountField(allow_null=True)


class SpendCapOut(serializers.Serializer):
    cap = serializers.IntegerField(allow_null=True)
    spent = serializers.IntegerField()
    remaining = serializers.IntegerField(allow_null=True)
    currency = serializers.CharField()


def _spend_cap_body(customer, feature: str) -> dict:
    """This period's overage spend against the effective cap."""
    balance = Balance.objects.filter(customer=customer, feature__slug=feature, entity__isnull=True).first()
    if balance is None:
        raise NotFound("balance", feature)
    spent = balance.overage * (balance.overage_price or 0)
    cap = balance.spend_cap
    return {"cap": cap, "spent": spent, "remaining": None if cap is None else max(0, cap - spent), "currency": balance.currency}


class SpendCapView(ApiView):
    audit_action = {"PUT": "spend_cap.set"}

    @extend_schema(operation_id="getSpendCap", parameters=[OpenApiParameter("customer", str), OpenApiParameter("feature", str)],
                   responses={200: SpendCapOut})
    def get(self, request):
        customer = customer_get(external_id=_required_param(request, "customer"))
        return Response(_spend_cap_body(customer, _required_param(request, "feature")))

    @extend_schema(operation_id="setSpendCap", request=SpendCapIn, responses={200: SpendCapOut})
    def put(self, request):
        v = self.validated(SpendCapIn)
        customer = customer_get(external_id=v["customer"])
        spend_cap_set(customer=customer, feature_slug=v["feature"], cap=v["cap"], now=timezone.now())
        self.audit_target = ("customer", customer.external_id)
        return Response(_spend_cap_body(customer, v["feature"]))


class ProductSpendCapView(ApiView):
    audit_action = {"PUT": "product.spend_cap.set"}

    @extend_schema(operation_id="setProductSpendCap", request=ProductSpendCapIn, responses={200: ProductSpendCapIn})
    def put(self, request, product_id: str):
        product = product_get(id_or_slug=product_id)
        v = self.validated(ProductSpendCapIn)
        product_spend_cap_set(product=product, feature_slug=v["feature"], cap=v["cap"], now=timezone.now())
        self.audit_target = ("product", product.pk)
        return Response({"feature": v["feature"], "cap": v["cap"]})


_RANGE_RE = re.compile(r"^([1-9][0-9]{0,2})d$")


def _required_param(request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise ValidationFailed(name, "is required")
    return value


class AggregateOut(serializers.Serializer):
    data = serializers.ListField(child=serializers.DictField())
    total = serializers.IntegerField()


class AggregateEventsView(ApiView):
    @extend_schema(
        operation_id="aggregateEvents",
        parameters=[OpenApiParameter("customer", str), OpenApiParameter("feature", str),
                    OpenApiParameter("range", str, description="Nd, 1 to 366 days (default 30d)"),
                    OpenApiParameter("groupBy", str, enum=["day", "week", "month"])],
        responses={200: AggregateOut},
    )
    def get(self, request):
        customer = customer_get(external_id=_required_param(request, "customer"))
        feature = Feature.objects.filter(slug=_required_param(request, "feature")).first()
        if feature is None:
            raise NotFound("feature", request.query_params["feature"])
        match = _RANGE_RE.match(request.query_params.get("range", "30d"))
        if not match or int(match.group(1)) > 366:
            raise ValidationFailed("range", "must be Nd with N from 1 to 366")
        group_by = request.query_params.get("groupBy", "day")
        if group_by not in ("day", "week", "month"):
            raise ValidationFailed("groupBy", "must be day, week or month")
        now = timezone.now()
        data, total = usage_aggregate(customer=customer, feature=feature, since=now - timedelta(days=int(match.group(1))),
                                      until=now, group_by=group_by)
        return Response({"data": data, "total": total})
