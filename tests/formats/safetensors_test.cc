// safetensors reader against hand-written files (valid and hostile) and the
// writer against literal header bytes and the reference library's vectors.
#include "strata/formats/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "strata/formats/error.h"

namespace strata {
namespace {

using testing::HasSubstr;

// One scratch directory per test process, removed when the process exits.
class Scratch {
 public:
  Scratch() {
    std::string tmpl = testing::TempDir() + "/strata_safetensors_XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    dir_ = tmpl;
  }
  ~Scratch() { std::filesystem::remove_all(dir_); }
  std::string Path(const std::string& stem) {
    return dir_ + "/" + stem + "." + std::to_string(counter_++) + ".safetensors";
  }

 private:
  std::string dir_;
  std::atomic<int> counter_{0};
};

Scratch& scratch() {
  static Scratch s;
  return s;
}

std::string WriteBytes(const std::string& bytes) {
  std::string path = scratch().Path("t");
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string LE64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A file whose header is `json` verbatim (no padding) followed by `data`.
std::string File(const std::string& json, const std::string& data = "") {
  return LE64(json.size()) + json + data;
}

// The Error message from opening `bytes` as a safetensors file.
std::string Rejection(const std::string& bytes) {
  std::string path = WriteBytes(bytes);
  try {
    SafetensorsFile f(path);
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_THAT(msg, HasSubstr(path)) << "message must name the file";
    return msg;
  }
  ADD_FAILURE() << "accepted a bad file";
  return "";
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// --- reader -----------------------------------------------------------------

TEST(Safetensors, ReadsValidTwoTensorFile) {
  const std::string json =
      R"({"__metadata__":{"format":"pt"},)"
      R"("b.bias":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},)"
      R"("a.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   )";
  const std::string data("\x00\x00\x80\x3f\x00\x00\x00\x40\x80\x3f\x00\xc0", 12);
  const std::string bytes = File(json, data);
  const std::string path = WriteBytes(bytes);

  SafetensorsFile f(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  ASSERT_EQ(f.tensors().size(), 2u);
  const TensorInfo& a = f.tensors()[0];  // sorted by begin offset
  const TensorInfo& b = f.tensors()[1];
  EXPECT_EQ(a.name, "a.weight");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2}));
  EXPECT_EQ(a.begin, 0u);
  EXPECT_EQ(a.end, 8u);
  EXPECT_EQ(a.numel(), 2u);
  EXPECT_EQ(b.name, "b.bias");
  EXPECT_EQ(b.dtype, DType::kBF16);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(b.begin, 8u);
  EXPECT_EQ(b.end, 12u);
  EXPECT_EQ(b.nbytes(), 4u);

  EXPECT_EQ(f.FileOffset(b), 8 + json.size() + 8);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.Data(a)), 8), data.substr(0, 8));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.Data(b)), 4), data.substr(8));
  float first;
  std::memcpy(&first, f.Data(a), 4);
  EXPECT_EQ(first, 1.0f);
  EXPECT_EQ(f.Find("b.bias"), &b);
  EXPECT_EQ(f.Find("c"), nullptr);
  EXPECT_EQ(f.mapped().size(), bytes.size());
}

TEST(Safetensors, AcceptsScalarsEmptyTensorsAndEmptyFiles) {
  const std::string json =
      R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("e":{"dtype":"BF16","shape":[3,0],"data_offsets":[4,4]},)"
      R"("e0":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}})";
  SafetensorsFile f(WriteBytes(File(json, std::string(4, '\x01'))));
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "e0");
  EXPECT_EQ(f.Find("s")->numel(), 1u);
  EXPECT_EQ(f.Find("e")->numel(), 0u);
  EXPECT_TRUE(f.metadata().empty());

  SafetensorsFile empty(WriteBytes(File("{}      ")));
  EXPECT_TRUE(empty.tensors().empty());
}

TEST(Safetensors, ParseNamesWhatInErrors) {
  const std::string bytes = "\x01\x02";
  try {
    ParseSafetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                     "in-memory.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("in-memory.safetensors: file is 2 bytes"));
  }
}

TEST(Safetensors, RejectsTruncatedFile) {
  EXPECT_THAT(Rejection("\x10\x00\x00"), HasSubstr("too short"));
  EXPECT_THAT(Rejection(""), HasSubstr("file is 0 bytes"));
}

TEST(Safetensors, RejectsHeaderLengthPastEof) {
  const std::string json = R"({})";
  EXPECT_THAT(Rejection(LE64(100) + json),
              HasSubstr("header length 100 runs past the end of the file (only 2 bytes"));
}

TEST(Safetensors, RejectsHeaderLengthOver100MB) {
  EXPECT_THAT(Rejection(LE64(100'000'001) + "{}"),
              HasSubstr("header length 100000001 exceeds the limit of 100000000"));
  EXPECT_THAT(Rejection(LE64(~0ull) + "{}"), HasSubstr("exceeds the limit"));
}

TEST(Safetensors, RejectsHeaderThatIsNotJson) {
  EXPECT_THAT(Rejection(File("{\"a\":")), HasSubstr("header is not valid JSON"));
  EXPECT_THAT(Rejection(File("\xff\xfe{}")), HasSubstr("header is not valid JSON"));
  EXPECT_THAT(Rejection(File("")), HasSubstr("header is not valid JSON"));
}

TEST(Safetensors, RejectsHeaderThatIsAJsonArray) {
  EXPECT_THAT(Rejection(File("[1,2]")), HasSubstr("not a JSON object (got array)"));
}

TEST(Safetensors, RejectsMalformedTensorEntries) {
  EXPECT_THAT(Rejection(File(R"({"w":[1]})")),
              HasSubstr("tensor \"w\" must be an object with dtype, shape and data_offsets"));
  EXPECT_THAT(Rejection(File(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", "0123")),
              HasSubstr("tensor \"w\" has no \"dtype\""));
  EXPECT_THAT(Rejection(File(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", "0123")),
              HasSubstr("tensor \"w\" has no \"shape\""));
  EXPECT_THAT(Rejection(File(R"({"w":{"dtype":"F32","shape":[1]}})", "0123")),
              HasSubstr("tensor \"w\" has no \"data_offsets\""));
  EXPECT_THAT(Rejection(File(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})")),
              HasSubstr("data_offsets [0] must be two non-negative integers"));
  EXPECT_THAT(
      Rejection(File(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}})", "0123")),
      HasSubstr("data_offsets [4,0] end before they begin"));
}

TEST(Safetensors, RejectsUnknownDType) {
  EXPECT_THAT(Rejection(File(R"({"w":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}})", "x")),
              HasSubstr("tensor \"w\" has unknown dtype \"Q4\"; strata reads BOOL, U8"));
}

TEST(Safetensors, RejectsNegativeOrNonIntegerShape) {
  EXPECT_THAT(
      Rejection(File(R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,24]}})")),
      HasSubstr("shape [2,-3] has the negative dimension -3"));
  EXPECT_THAT(Rejection(File(R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})")),
              HasSubstr("has the dimension 1.5"));
  EXPECT_THAT(Rejection(File(R"({"w":{"dtype":"F32","shape":3,"data_offsets":[0,4]}})")),
              HasSubstr("shape 3 is not a list"));
}

TEST(Safetensors, RejectsShapeWhoseSizeOverflows) {
  EXPECT_THAT(Rejection(File(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],)"
                             R"("data_offsets":[0,0]}})")),
              HasSubstr("overflows a 64-bit byte count"));
}

TEST(Safetensors, RejectsOffsetsOutOfBounds) {
  EXPECT_THAT(Rejection(File(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                             std::string(8, '\0'))),
              HasSubstr("tensor \"w\" data_offsets [0, 16] run past the end of the data "
                        "section, which holds 8 bytes"));
}

TEST(Safetensors, RejectsOverlappingOffsets) {
  EXPECT_THAT(Rejection(File(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             std::string(12, '\0'))),
              HasSubstr("tensors \"a\" [0, 8] and \"b\" [4, 12] overlap"));
}

TEST(Safetensors, RejectsGapBetweenTensors) {
  EXPECT_THAT(Rejection(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                             std::string(12, '\0'))),
              HasSubstr("data bytes [4, 8) belong to no tensor (gap before tensor \"b\")"));
  // Unclaimed bytes before the first tensor and after the last one.
  EXPECT_THAT(Rejection(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                             std::string(8, '\0'))),
              HasSubstr("data bytes [0, 4) belong to no tensor"));
  EXPECT_THAT(Rejection(File(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                             std::string(6, '\0'))),
              HasSubstr("data section holds 6 bytes but the tensors cover only the first 4"));
  EXPECT_THAT(Rejection(File("{}", "x")), HasSubstr("cover only the first 0"));
}

TEST(Safetensors, RejectsSizeMismatch) {
  EXPECT_THAT(
      Rejection(File(R"({"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,10]}})",
                     std::string(10, '\0'))),
      HasSubstr("tensor \"a.weight\" data_offsets [0, 10] hold 10 bytes but shape [2, 3] "
                "of F32 needs 24"));
}

TEST(Safetensors, RejectsBadMetadata) {
  EXPECT_THAT(Rejection(File(R"({"__metadata__":["pt"]})")),
              HasSubstr("\"__metadata__\" must be an object of string values, got array"));
  EXPECT_THAT(Rejection(File(R"({"__metadata__":{"format":"pt","n":5}})")),
              HasSubstr("but key \"n\" holds 5"));
}

TEST(Safetensors, RejectsDuplicateKeys) {
  EXPECT_THAT(Rejection(File(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                             "x")),
              HasSubstr("repeats the key \"a\""));
}

// --- layout and writer -----------------------------------------------------

uint64_t PrefixOf(const std::string& header) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(header[i]);
  return n;
}

std::vector<std::string> Names(const SafetensorsLayout& l) {
  std::vector<std::string> names;
  for (const TensorInfo& t : l.tensors) names.push_back(t.name);
  return names;
}

TEST(Safetensors, LayoutSortsByDTypeRankDescendingThenName) {
  SafetensorsLayout l = LayoutSafetensors(
      {{"z", DType::kBF16, {2}},
       {"m", DType::kF32, {1}},
       {"a", DType::kBF16, {3}},
       {"h", DType::kF16, {1}},
       {"B", DType::kF32, {1}},
       {"i", DType::kI64, {1}},
       {"a.10", DType::kF32, {1}},
       {"a.2", DType::kF32, {1}}},
      {{"format", "pt"}});
  EXPECT_EQ(Names(l), (std::vector<std::string>{"i", "B", "a.10", "a.2", "m", "a", "z", "h"}));
  std::vector<std::pair<uint64_t, uint64_t>> offsets;
  for (const TensorInfo& t : l.tensors) offsets.emplace_back(t.begin, t.end);
  EXPECT_EQ(offsets, (std::vector<std::pair<uint64_t, uint64_t>>{
                         {0, 8}, {8, 12}, {12, 16}, {16, 20}, {20, 24}, {24, 30}, {30, 34},
                         {34, 36}}));
  EXPECT_EQ(l.header.size() % 8, 0u);
  EXPECT_EQ(PrefixOf(l.header), l.header.size() - 8);
  EXPECT_EQ(l.file_size, l.header.size() + 36);
}

TEST(Safetensors, LayoutHeaderBytesAreExact) {
  SafetensorsLayout l = LayoutSafetensors(
      {{"c", DType::kBF16, {}}, {"b", DType::kBF16, {2}}, {"a", DType::kF32, {1}}},
      {{"format", "pt"}});
  const std::string json =
      R"({"__metadata__":{"format":"pt"},)"
      R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},)"
      R"("c":{"dtype":"BF16","shape":[],"data_offsets":[8,10]}})";
  ASSERT_EQ(json.size(), 193u);
  EXPECT_EQ(l.header, std::string("\xc8\0\0\0\0\0\0\0", 8) + json + "       ");
  EXPECT_EQ(l.file_size, 8u + 200u + 10u);
}

// Expected bytes stated in the reference library's own tests (tensor.rs).
TEST(Safetensors, LayoutMatchesReferenceVectors) {
  EXPECT_EQ(LayoutSafetensors({{"attn.0", DType::kF32, {1, 2, 3}}}, {}).header,
            std::string("\x40\0\0\0\0\0\0\0", 8) +
                R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})");
  EXPECT_EQ(LayoutSafetensors({{"attn0", DType::kF32, {1, 1, 2, 3}}}, {}).header,
            std::string("\x48\0\0\0\0\0\0\0", 8) +
                R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" +
                "       ");
  EXPECT_EQ(LayoutSafetensors({}, {}).header, std::string("\x08\0\0\0\0\0\0\0", 8) + "{}      ");
  EXPECT_EQ(LayoutSafetensors({}, {{"framework", "pt"}}).header,
            std::string("\x28\0\0\0\0\0\0\0", 8) + R"({"__metadata__":{"framework":"pt"}})" +
                "     ");
}

TEST(Safetensors, LayoutEscapesNamesLikeSerdeJson) {
  SafetensorsLayout l = LayoutSafetensors({{"q\"\\\n\x01/é", DType::kU8, {0}}}, {});
  EXPECT_THAT(l.header, HasSubstr(R"({"q\"\\\n\u0001/é":{"dtype":"U8")"));
}

TEST(Safetensors, LayoutRejectsBadSpecs) {
  auto message = [](std::vector<TensorSpec> specs) {
    try {
      LayoutSafetensors(std::move(specs), {});
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(message({{"a", DType::kF32, {1}}, {"a", DType::kBF16, {1}}}),
              HasSubstr("two tensors named \"a\""));
  EXPECT_THAT(message({{"a", DType::kF32, {2, -1}}}), HasSubstr("negative dimension"));
  EXPECT_THAT(message({{"__metadata__", DType::kF32, {1}}}), HasSubstr("reserved"));
  EXPECT_THAT(message({{"a", DType::kF64, {1ll << 40, 1ll << 40}}}), HasSubstr("overflows"));
  EXPECT_THAT(message({{"bad\xff", DType::kF32, {1}}}), HasSubstr("not valid UTF-8"));
}

TEST(Safetensors, WriterOutputReadsBackByteForByte) {
  // A source file for AppendFrom.
  const std::string source_bytes = "0123456789abcdef";
  const std::string source = WriteBytes(source_bytes);
  const std::string path = scratch().Path("written");
  SafetensorsLayout layout;
  {
    WritableFile out(path);
    SafetensorsWriter w(&out, {{"b", DType::kBF16, {2}}, {"a", DType::kF32, {2}},
                               {"z", DType::kU8, {0}}, {"c", DType::kU8, {4}}},
                        {{"format", "pt"}});
    layout = w.layout();
    ASSERT_EQ(Names(layout), (std::vector<std::string>{"a", "b", "c", "z"}));
    const float a[2] = {1.0f, -2.0f};
    w.Append(a, sizeof a);
    w.AppendZeros(4);  // b
    int fd = OpenReadOnly(source);
    w.AppendFrom(fd, 6, 4);  // c = "6789"
    CloseFd(fd);
    w.Finish();
    out.Close();
  }
  std::string data(12, '\0');
  const float a[2] = {1.0f, -2.0f};
  std::memcpy(data.data(), a, 8);
  data += "6789";
  const std::string bytes = ReadAll(path);
  EXPECT_EQ(bytes, layout.header + data);
  EXPECT_EQ(bytes.size(), layout.file_size);

  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  ASSERT_EQ(f.tensors().size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const TensorInfo& got = f.tensors()[i];
    const TensorInfo& want = layout.tensors[i];
    SCOPED_TRACE(want.name);
    EXPECT_EQ(got.name, want.name);
    const TensorInfo* t = f.Find(want.name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, want.dtype);
    EXPECT_EQ(t->shape, want.shape);
    EXPECT_EQ(t->begin, want.begin);
    EXPECT_EQ(t->end, want.end);
    EXPECT_EQ(f.FileOffset(got), layout.header.size() + got.begin);
  }
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.Data(*f.Find("c"))), 4), "6789");
}

TEST(Safetensors, WriterRejectsTooManyBytes) {
  const std::string path = scratch().Path("long");
  WritableFile out(path);
  SafetensorsWriter w(&out, {{"a", DType::kF32, {1}}}, {});
  const uint64_t header_size = out.size();
  EXPECT_EQ(header_size, w.layout().header.size());
  const char bytes[8] = {};
  try {
    w.Append(bytes, 8);
    FAIL() << "accepted 8 bytes for a 4-byte data section";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("appending 8 bytes would write past the safetensors data "
                                    "section (0 of 4 bytes already written)"));
  }
  EXPECT_EQ(out.size(), header_size) << "nothing may reach the file";
  w.Append(bytes, 4);
  EXPECT_THROW(w.AppendZeros(1), Error);
  w.Finish();
}

TEST(Safetensors, WriterRejectsTooFewBytes) {
  const std::string path = scratch().Path("short");
  WritableFile out(path);
  SafetensorsWriter w(&out, {{"a", DType::kF32, {1}}, {"b", DType::kF32, {2}}}, {});
  w.AppendZeros(6);
  try {
    w.Finish();
    FAIL() << "finished with 6 of 12 bytes";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("wrote 6 of 12 bytes; tensor \"b\" [4, 12] is incomplete"));
  }
}

}  // namespace
}  // namespace strata
