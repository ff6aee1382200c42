// The seeded world of `flora data synth`: people, towns, jobs, animals, things
// and colours, and the facts that relate them. A small base model pretrained on
// the corpus that states these facts can then be asked about them (the mcq
// task), so that an adapter has to learn only the answer format, not the world.
//
// Animals, things and jobs are a fixed, real-world-like list (ordered by size,
// weight); people and towns are drawn from the seed: names, where each person
// lives, their job, age, favourite colour and pet. Everything depends only on
// (seed, sizes); no std:: distribution or shuffle is used, since their
// algorithms differ between standard libraries.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "util/random.h"

namespace flora::synth {

// splitmix64 stream with portable helpers. Streams for different parts of the
// generator are separate (seed mixed with a name), so that changing how much of
// one part is made does not change the others.
class Rng {
 public:
  Rng(uint64_t seed, std::string_view stream) : state_(seed ^ fnv1a(stream)) { next(); }
  uint64_t next() { return splitmix64(state_); }
  // Uniform in [0, n) by multiply-shift; the bias (n / 2^64) is far below anything measurable here.
  size_t below(size_t n) { return static_cast<size_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
  // Uniform in [lo, hi], both included.
  int64_t range(int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(below(static_cast<size_t>(hi - lo + 1))); }
  bool chance(double p) { return uniform01(state_) < p; }
  template <typename T>
  const T& pick(const std::vector<T>& v) {
    return v[below(v.size())];
  }
  template <typename T, size_t N>
  const T& pick(const T (&a)[N]) {
    return a[below(N)];
  }
  // Fisher-Yates.
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[below(i)]);
  }

 private:
  uint64_t state_;
};

struct Animal {
  std::string name, plural;
  std::string food;   // "fish": "Cats eat fish."
  std::string home;   // "a burrow": "A rabbit lives in a burrow."
  std::string sound;  // "moo"; empty for animals that make none worth naming
  int legs = 4;
  bool pet = false;  // people may keep it as a pet
};

struct Thing {
  std::string name;
  std::string material;  // "A spoon is made of metal."
};

struct Job {
  std::string name, plural;
  std::string place;  // "in a bakery": "A baker works in a bakery."
  std::string tool;   // "oven": "A baker uses an oven."
};

struct Town {
  std::string name;
  std::string feature;  // "by the sea": "Oakford is a town by the sea."
};

struct Person {
  std::string name;
  bool female = false;
  int age = 0;
  int town = 0, job = 0, colour = 0, pet = 0;  // indices into World's lists (pet: into animals)
};

// What a fact or a question is about. Comparisons are stated as facts in one
// direction (kBigger: subject is bigger than object); kSmaller and kLighter
// exist only as question kinds.
enum class Relation {
  kTown,       // person lives in town
  kJob,        // person is a job
  kAge,        // person is N years old
  kColour,     // person's favourite colour
  kPet,        // person has a pet animal
  kFood,       // animal eats food
  kHome,       // animal lives in home
  kLegs,       // animal has N legs
  kSound,      // animal says sound
  kBigger,     // animal subject is bigger than animal object
  kSmaller,    // (question) which animal is smaller than subject
  kMaterial,   // thing is made of material
  kHeavier,    // thing subject is heavier than thing object
  kLighter,    // (question) which thing is lighter than subject
  kWorkplace,  // job works at place
  kTool,       // job uses tool
  kFeature,    // town lies by feature
};

// One fact: the relation, its subject and its object (an index into the list the
// relation names, or the age for kAge). A fact's canonical sentence is stated at
// least once in the corpus, word for word.
struct Fact {
  Relation relation;
  int subject = 0;
  int object = 0;
  bool operator==(const Fact&) const = default;
};

struct WorldSize {
  int people = 100;
  int towns = 12;
};

struct World {
  std::vector<Animal> animals;  // smallest first: a larger index is a bigger animal
  std::vector<Thing> things;    // lightest first: a larger index is a heavier thing
  std::vector<Job> jobs;
  std::vector<std::string> colours;
  std::vector<Town> towns;
  std::vector<Person> people;

  static World make(uint64_t seed, const WorldSize& size);

  // The canonical sentence of a fact, e.g. "Mira lives in Oakford."
  std::string sentence(const Fact& fact) const;
  // Every fact of the world (comparisons: every ordered pair, bigger first).
  std::vector<Fact> facts() const;
  // The value the relation gives the subject, as a multiple-choice answer spells
  // it ("Oakford", "baker", "34", "a cat", "fish", "in a bakery"). Not for the comparisons.
  std::string value(Relation relation, int subject) const;
  // All values a relation's answers can take (distractors are drawn from these).
  std::vector<std::string> values(Relation relation) const;

  // Pronouns of a person.
  static const char* he(const Person& p) { return p.female ? "she" : "he"; }
  static const char* him(const Person& p) { return p.female ? "her" : "him"; }
  static const char* his(const Person& p) { return p.female ? "her" : "his"; }
};

// English helpers.
std::string a_an(std::string_view noun);  // "an owl", "a cat"
std::string capitalize(std::string s);
std::string number_word(int n);  // 0..12 as words ("no" for 0), otherwise digits
// "A, B and C"
std::string join_and(const std::vector<std::string>& items);

}  // namespace flora::synth
