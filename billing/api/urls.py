from django.urls import path

from billing.api.views import api_keys, audit, customers, entitlements, ledger, ping, portal, products, subscriptions

urlpatterns = [
    path("ping", ping.PingView.as_view(), name="ping"),
    path("customers", customers.CustomerCollectionView.as_view(), name="customers"),
    path("customers/<str:customer_id>", customers.CustomerDetailView.as_view(), name="customer-detail"),
    path("customers/<str:customer_id>/entities", entitlements.EntityCollectionView.as_view(), name="entities"),
    path("customers/<str:customer_id>/entities/<str:entity_id>", entitlements.EntityDetailView.as_view(), name="entity-detail"),
    path("check", entitlements.CheckView.as_view(), name="check"),
    path("track", entitlements.TrackView.as_view(), name="track"),
    path("locks/finalize", entitlements.FinalizeLockView.as_view(), name="locks-finalize"),
    path("balances", entitlements.BalanceView.as_view(), name="balances"),
    path("spend-caps", entitlements.SpendCapView.as_view(), name="spend-caps"),
    path("events/aggregate", entitlements.AggregateEventsView.as_view(), name="events-aggregate"),
    path("subscribe", subscriptions.SubscribeView.as_view(), name="subscribe"),
    path("products", products.ProductCollectionView.as_view(), name="products"),
    path("products/<str:product_id>/spend-cap", entitlements.ProductSpendCapView.as_view(), name="product-spend-cap"),
    path("products/<str:product_id>", products.ProductDetailView.as_view(), name="product-detail"),
    path("products/<str:product_id>/versions", products.ProductVersionsView.as_view(), name="product-versions"),
    path("api-keys", api_keys.ApiKeyCollectionView.as_view(), name="api-keys"),
    path("api-keys/<str:key_id>", api_keys.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("portal", portal.PortalLinkView.as_view(), name="portal"),
    path("audit-events", audit.AuditEventListView.as_view(), name="audit-events"),
    path("ledger/trial-balance", ledger.TrialBalanceView.as_view(), name="trial-balance"),
    path("ledger/entries", ledger.LedgerEntryListView.as_view(), name="ledger-entries"),
]
