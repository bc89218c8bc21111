import factory
from django.utils import timezone

from billing.models import Customer, Product, ProductVersion, Subscription


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    external_id = factory.Sequence(lambda n: f"cus_{n}")
    name = factory.Faker("name")
    email = factory.LazyAttribute(lambda o: f"{o.external_id}@example.com")
    created_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyFunction(timezone.now)


class ProductFactory(factory.django.DjangoModelFactory):
    """A product with an empty version 1 (use the catalog service for prices and features)."""

    class Meta:
        model = Product
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"product-{n}")
    name = factory.LazyAttribute(lambda o: o.slug.title())
    created_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyFunction(timezone.now)

    @factory.post_generation
    def with_version(obj, create, extracted, **kwargs):
        if create and obj.current_version_id is None:
            obj.current_version = ProductVersion.objects.create(product=obj, version=1, created_at=obj.created_at)
            obj.save(update_fields=["current_version"])


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Subscription

    customer = factory.SubFactory(CustomerFactory)
    product = factory.SubFactory(ProductFactory)
    version = factory.LazyAttribute(lambda o: o.product.current_version)
    status = Subscription.Status.ACTIVE
    created_at = factory.LazyFunction(timezone.now)
