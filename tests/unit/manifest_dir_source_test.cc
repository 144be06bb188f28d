// ManifestDirSource on a temp directory: create/modify/rename/delete map to
// exactly that file's updates; broken files keep their previous objects;
// editors' temp files are ignored; ConfigMap-style ..data swaps rescan.
#include "controller/source/manifest_dir_source.h"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::controller {
namespace {

namespace fs = std::filesystem;
using ::testing::IsEmpty;
using ::testing::SizeIs;

std::string ServiceYaml(const std::string& name, const std::string& ip) {
  return "apiVersion: v1\nkind: Service\nmetadata:\n  name: " + name +
         "\nspec:\n  clusterIP: " + ip + "\n  ports:\n  - port: 80\n";
}

class ManifestDirSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kpx-mds-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    auto src = ManifestDirSource::Create(dir_);
    ASSERT_TRUE(src.ok()) << src.status();
    source_ = std::move(*src);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void Write(const std::string& name, const std::string& content) {
    std::ofstream(dir_ + "/" + name) << content;
  }
  // Waits (bounded) for inotify to report something, then reads the updates.
  std::vector<SourceUpdate> Next(int timeout_ms = 2000) {
    pollfd pfd{source_->fd(), POLLIN, 0};
    if (poll(&pfd, 1, timeout_ms) <= 0) return {};
    return source_->ReadEvents();
  }

  std::string dir_;
  std::unique_ptr<ManifestDirSource> source_;
};

TEST_F(ManifestDirSourceTest, RescanLoadsExistingFilesOnly) {
  Write("a.yaml", ServiceYaml("a", "10.96.0.1"));
  Write(".hidden.yaml", ServiceYaml("h", "10.96.0.2"));
  Write("notes.txt", "hello");
  auto updates = source_->Rescan();
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].source, dir_ + "/a.yaml");
  EXPECT_THAT(updates[0].objects.services, SizeIs(1));
  EXPECT_THAT(source_->Rescan(), IsEmpty());  // unchanged content: no update
}

TEST_F(ManifestDirSourceTest, CreateModifyDeleteAffectOnlyThatFile) {
  Write("a.yaml", ServiceYaml("a", "10.96.0.1"));
  Write("b.yaml", ServiceYaml("b", "10.96.0.2"));
  source_->Rescan();
  Write("b.yaml", ServiceYaml("b", "10.96.0.3"));
  auto updates = Next();
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].kind, SourceUpdate::Kind::kReplace);
  EXPECT_EQ(updates[0].source, dir_ + "/b.yaml");
  EXPECT_EQ(updates[0].objects.services[0].cluster_ip, "10.96.0.3");

  fs::remove(dir_ + "/a.yaml");
  updates = Next();
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].kind, SourceUpdate::Kind::kRemove);
  EXPECT_EQ(updates[0].source, dir_ + "/a.yaml");
}

TEST_F(ManifestDirSourceTest, AtomicRenameFromTempFileIsOneUpdate) {
  // What editors and `kubectl`-style writers do: write a temp file, rename.
  Write(".c.yaml.swp", ServiceYaml("c", "10.96.0.9"));
  Write("c.yaml.tmp~", ServiceYaml("c", "10.96.0.9"));
  EXPECT_THAT(Next(300), IsEmpty());
  fs::rename(dir_ + "/.c.yaml.swp", dir_ + "/c.yaml");
  auto updates = Next();
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].source, dir_ + "/c.yaml");
  // Renaming away is a removal.
  fs::rename(dir_ + "/c.yaml", dir_ + "/c.yaml.bak");
  updates = Next();
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].kind, SourceUpdate::Kind::kRemove);
}

TEST_F(ManifestDirSourceTest, BrokenFileKeepsPreviousObjectsAndIsCounted) {
  Write("a.yaml", ServiceYaml("a", "10.96.0.1"));
  ASSERT_THAT(source_->Rescan(), SizeIs(1));
  Write("a.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  ports:\n  - port: http\n");
  EXPECT_THAT(Next(), IsEmpty());  // no update: previous objects stay applied
  EXPECT_EQ(source_->stats().parse_errors, 1u);
  EXPECT_THAT(source_->stats().file_errors.at(dir_ + "/a.yaml"), ::testing::HasSubstr("port"));
  // Fixing the file applies it and clears the error.
  Write("a.yaml", ServiceYaml("a", "10.96.0.5"));
  auto updates = Next();
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].objects.services[0].cluster_ip, "10.96.0.5");
  EXPECT_FALSE(source_->stats().file_errors.contains(dir_ + "/a.yaml"));
}

TEST_F(ManifestDirSourceTest, PartialWriteIsNotReadBeforeClose) {
  std::string path = dir_ + "/p.yaml";
  int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  std::string half = ServiceYaml("p", "10.96.0.7").substr(0, 20);
  ASSERT_EQ(write(fd, half.data(), half.size()), static_cast<ssize_t>(half.size()));
  EXPECT_THAT(Next(300), IsEmpty());
  std::string rest = ServiceYaml("p", "10.96.0.7").substr(20);
  ASSERT_EQ(write(fd, rest.data(), rest.size()), static_cast<ssize_t>(rest.size()));
  close(fd);
  auto updates = Next();
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].objects.services[0].cluster_ip, "10.96.0.7");
  EXPECT_EQ(source_->stats().parse_errors, 0u);
}

TEST_F(ManifestDirSourceTest, ConfigMapDataSwapRescans) {
  // ConfigMap volume layout: x.yaml -> ..data/x.yaml, ..data -> ..ts1
  fs::create_directory(dir_ + "/..ts1");
  std::ofstream(dir_ + "/..ts1/x.yaml") << ServiceYaml("x", "10.96.0.1");
  fs::create_directory_symlink("..ts1", dir_ + "/..data");
  fs::create_symlink("..data/x.yaml", dir_ + "/x.yaml");
  Next(300);  // drain creation events
  source_->Rescan();
  fs::create_directory(dir_ + "/..ts2");
  std::ofstream(dir_ + "/..ts2/x.yaml") << ServiceYaml("x", "10.96.0.2");
  fs::create_directory_symlink("..ts2", dir_ + "/..data_tmp");
  fs::rename(dir_ + "/..data_tmp", dir_ + "/..data");
  std::vector<SourceUpdate> updates;
  for (int i = 0; i < 5 && updates.empty(); ++i) updates = Next();
  ASSERT_THAT(updates, SizeIs(1));
  EXPECT_EQ(updates[0].objects.services[0].cluster_ip, "10.96.0.2");
}

}  // namespace
}  // namespace kpx::controller
