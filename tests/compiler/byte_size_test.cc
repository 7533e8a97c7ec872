// ParseByteSize (export's and synth's --shard-size) on hostile input: sizes
// past 2^63, past 2^64, and below one byte are refused, not wrapped into a
// shard size of a few bytes (one tensor per shard).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "strata/compiler/export.h"
#include "test_util.h"

namespace strata {
namespace {

using ::testing::HasSubstr;
using testutil::ErrorOf;

TEST(ByteSize, ExactDecimalsWithUnits) {
  EXPECT_EQ(ParseByteSize("1.1G"), 1'100'000'000u);
  EXPECT_EQ(ParseByteSize("0.3K"), 300u);
  EXPECT_EQ(ParseByteSize("1.5GiB"), 1'610'612'736u);
  EXPECT_EQ(ParseByteSize("0.5KiB"), 512u);
  EXPECT_EQ(ParseByteSize("5e9"), 5'000'000'000u);
  EXPECT_EQ(ParseByteSize("2.50M"), 2'500'000u);
  EXPECT_EQ(ParseByteSize("1000e-3"), 1u);
  EXPECT_EQ(ParseByteSize("007"), 7u);
}

TEST(ByteSize, LimitIsTwoToThe63) {
  EXPECT_EQ(ParseByteSize("9223372036854775808"), uint64_t{1} << 63);
  EXPECT_EQ(ParseByteSize("8GiB"), uint64_t{8} << 30);
  EXPECT_THAT(ErrorOf([] { ParseByteSize("9223372036854775809"); }), HasSubstr("more than 2^63 bytes"));
}

TEST(ByteSize, HugeValuesAreRefusedNotWrapped) {
  for (const char* big : {"1e30", "18446744073709551616", "99999999999999999999999", "1e9999", "10000000000B",
                          "99999999999999999999999999999999999999999999999999GiB"}) {
    const std::string msg = ErrorOf([&] { ParseByteSize(big); });
    EXPECT_THAT(msg, HasSubstr("cannot read size \"" + std::string(big) + "\"")) << big;
    EXPECT_THAT(msg, HasSubstr("whole number of bytes from 1 to 2^63")) << big;
  }
}

TEST(ByteSize, LessThanOneByteOrFractionalBytesAreRefused) {
  EXPECT_THAT(ErrorOf([] { ParseByteSize("0.0001"); }), HasSubstr("not a whole number of bytes"));
  EXPECT_THAT(ErrorOf([] { ParseByteSize("0.5"); }), HasSubstr("not a whole number of bytes"));
  EXPECT_THAT(ErrorOf([] { ParseByteSize("1.0000001K"); }), HasSubstr("not a whole number of bytes"));
  EXPECT_THAT(ErrorOf([] { ParseByteSize("1e-1"); }), HasSubstr("not a whole number of bytes"));
  EXPECT_THAT(ErrorOf([] { ParseByteSize("0"); }), HasSubstr("0 bytes"));
  EXPECT_THAT(ErrorOf([] { ParseByteSize("0.000G"); }), HasSubstr("0 bytes"));
}

TEST(ByteSize, NotNumbersAreRefused) {
  for (const char* bad : {"", "M", ".", "-5M", "+5", " 5", "5 ", "inf", "nan", "0x10", "1e", "1e+", "1.2.3", "5X",
                          "1,000", "1e99999"})
    EXPECT_THAT(ErrorOf([&] { ParseByteSize(bad); }), HasSubstr("e.g. 5B (5e9 bytes")) << bad;
}

}  // namespace
}  // namespace strata
