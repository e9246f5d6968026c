#include "registry/AuthChallenge.h"

#include <catch2/catch.hpp>

using registry::parseChallenges;

TEST_CASE("a Bearer challenge with a quoted scope holding commas and spaces", "[auth]") {
    auto c = parseChallenges(
        R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull")");
    REQUIRE(c.size() == 1);
    CHECK(c[0].scheme == "bearer");
    CHECK(c[0].param("realm") == "https://auth.example/token");
    CHECK(c[0].param("service") == "registry.example");
    CHECK(c[0].param("scope") == "repository:a/b:pull,push repository:c:pull");
}

TEST_CASE("several challenges in one header, any case, tokens and escapes", "[auth]") {
    auto c = parseChallenges(R"(BASIC Realm="x\"y", bearer realm=http://h/t , error="invalid_token")");
    REQUIRE(c.size() == 2);
    CHECK(c[0].scheme == "basic");
    CHECK(c[0].param("realm") == "x\"y");
    CHECK(c[1].scheme == "bearer");
    CHECK(c[1].param("realm") == "http://h/t");
    CHECK(c[1].param("error") == "invalid_token");
}

TEST_CASE("odd challenges end, with what could be read", "[auth]") {
    CHECK(parseChallenges("").empty());
    CHECK(parseChallenges(" , ,").empty());
    auto c = parseChallenges("Negotiate abc==, Basic realm=\"r\"");
    REQUIRE(c.size() == 2);
    CHECK(c[1].scheme == "basic");
    CHECK(c[1].param("realm") == "r");
    CHECK(parseChallenges("Bearer realm=\"unterminated").at(0).param("realm") == "unterminated");
    CHECK(parseChallenges("\"quoted\" Basic").empty());  // nothing to go on until a comma
    CHECK(parseChallenges("\"quoted\", Basic").at(0).scheme == "basic");
}
