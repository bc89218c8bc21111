from django.urls import path

from billing.api.views import api_keys, audit, customers, ledger, portal, products

urlpatterns = [
    path("customers", customers.CustomerCollectionView.as_view(), name="customers"),
    path("customers/<str:customer_id>", customers.CustomerDetailView.as_view(), name="customer-detail"),
    path("products", products.ProductCollectionView.as_view(), name="products"),
    path("products/<str:product_id>", products.ProductDetailView.as_view(), name="product-detail"),
    path("products/<str:product_id>/versions", products.ProductVersionsView.as_view(), name="product-versions"),
    path("api-keys", api_keys.ApiKeyCollectionView.as_view(), name="api-keys"),
    path("api-keys/<str:key_id>", api_keys.ApiKeyDetailView.as_view(), name="api-key-detail"),
    path("portal", portal.PortalLinkView.as_view(), name="portal"),
    path("audit-events", audit.AuditEventListView.as_view(), name="audit-events"),
    path("ledger/trial-balance", ledger.TrialBalanceView.as_view(), name="trial-balance"),
    path("ledger/entries", ledger.LedgerEntryListView.as_view(), name="ledger-entries"),
]
