use super::*;

#[test]
fn keys_read_back_from_labels() {
    assert_eq!(
        parse_key("AuthorizationPolicy shop/p"),
        Some(ObjectKey::new("AuthorizationPolicy", "shop", "p"))
    );
    assert_eq!(
        parse_key("Namespace shop"),
        Some(ObjectKey::new("Namespace", "", "shop"))
    );
}
