#include "synth/tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>

#include "util/error.h"

namespace flora::synth {

namespace {

const std::string& name_of(const World& w, int person) { return w.people[person].name; }

// Draws `n` distinct items of `pool` that differ from every item of `avoid`.
std::vector<std::string> distinct_others(const std::vector<std::string>& pool, const std::vector<std::string>& avoid,
                                         size_t n, Rng& rng) {
  std::vector<std::string> candidates;
  for (const auto& v : pool)
    if (std::find(avoid.begin(), avoid.end(), v) == avoid.end()) candidates.push_back(v);
  FLORA_ASSERT(candidates.size() >= n);
  rng.shuffle(candidates);
  candidates.resize(n);
  return candidates;
}

std::string join_words(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : " ") + p;
  return out;
}

// A different person from `not_this`.
int other_person(const World& w, int not_this, Rng& rng) {
  int p = static_cast<int>(rng.below(w.people.size() - 1));
  return p >= not_this ? p + 1 : p;
}

}  // namespace

// ---- multiple choice ----

std::vector<QuestionKey> question_keys(const World& w) {
  std::vector<QuestionKey> keys;
  for (int i = 0; i < static_cast<int>(w.people.size()); ++i)
    for (Relation r : {Relation::kTown, Relation::kJob, Relation::kAge, Relation::kColour, Relation::kPet})
      keys.push_back({r, i});
  const int animals = static_cast<int>(w.animals.size());
  for (int i = 0; i < animals; ++i) {
    keys.push_back({Relation::kFood, i});
    keys.push_back({Relation::kHome, i});
    keys.push_back({Relation::kLegs, i});
    if (!w.animals[i].sound.empty()) keys.push_back({Relation::kSound, i});
    // A comparison needs one answer on the asked side and two distractors on the other.
    if (i >= 2 && i + 1 < animals) keys.push_back({Relation::kBigger, i});
    if (i >= 1 && i + 2 < animals) keys.push_back({Relation::kSmaller, i});
  }
  const int things = static_cast<int>(w.things.size());
  for (int i = 0; i < things; ++i) {
    keys.push_back({Relation::kMaterial, i});
    if (i >= 2 && i + 1 < things) keys.push_back({Relation::kHeavier, i});
    if (i >= 1 && i + 2 < things) keys.push_back({Relation::kLighter, i});
  }
  for (int i = 0; i < static_cast<int>(w.jobs.size()); ++i) {
    keys.push_back({Relation::kWorkplace, i});
    keys.push_back({Relation::kTool, i});
  }
  for (int i = 0; i < static_cast<int>(w.towns.size()); ++i) keys.push_back({Relation::kFeature, i});
  return keys;
}

std::string McqItem::instruction() const {
  std::string options;
  for (size_t i = 0; i < choices.size(); ++i) options += fmt::format("{}Answer{}: {}", i ? " " : "", i + 1, choices[i]);
  return fmt::format("Please choose the correct answer to the question: {}\n\n{}\n\nAnswer format: {}", question,
                     options, "answer1/answer2/answer3");
}

McqItem make_mcq(const World& w, const QuestionKey& key, int position, Rng& rng) {
  FLORA_ASSERT(position >= 0 && position < kMcqChoices);
  McqItem item;
  item.key = key;
  const int s = key.subject;
  std::string correct;
  std::vector<std::string> distractors;
  auto question = [&](std::initializer_list<const char*> forms, const std::string& arg) {
    const std::vector<const char*> v(forms);
    item.question = fmt::format(fmt::runtime(rng.pick(v)), arg);
  };
  // Comparisons: the answer is on the asked side of the subject, the distractors on the other.
  auto compare = [&](int count, bool above, Relation fact_relation, auto name_of_index) {
    std::vector<int> higher, lower;
    for (int i = s + 1; i < count; ++i) higher.push_back(i);
    for (int i = 0; i < s; ++i) lower.push_back(i);
    std::vector<int>& answer_side = above ? higher : lower;
    std::vector<int>& other_side = above ? lower : higher;
    FLORA_ASSERT(!answer_side.empty() && other_side.size() >= 2);
    const int answer = rng.pick(answer_side);
    rng.shuffle(other_side);
    correct = a_an(name_of_index(answer));
    for (int i = 0; i < 2; ++i) distractors.push_back(a_an(name_of_index(other_side[i])));
    // Facts are stated bigger/heavier first.
    for (int x : {answer, other_side[0], other_side[1]})
      item.facts.push_back(x > s ? Fact{fact_relation, x, s} : Fact{fact_relation, s, x});
  };
  auto animal = [&](int i) { return w.animals[i].name; };
  auto thing = [&](int i) { return w.things[i].name; };

  switch (key.relation) {
    case Relation::kTown:
      question({"Where does {} live?", "In which town does {} live?", "Which town is {}'s home?"}, name_of(w, s));
      item.facts.push_back({key.relation, s, w.people[s].town});
      break;
    case Relation::kJob:
      question({"What is {}'s job?", "What does {} do for a living?", "What job does {} have?"}, name_of(w, s));
      item.facts.push_back({key.relation, s, w.people[s].job});
      break;
    case Relation::kAge: {
      question({"How old is {}?", "What is {}'s age?"}, name_of(w, s));
      const int age = w.people[s].age;
      item.facts.push_back({key.relation, s, age});
      correct = std::to_string(age);
      // Wrong ages at least three years away from the right one and from each other.
      std::vector<int> ages;
      while (ages.size() < 2) {
        const int a = static_cast<int>(rng.range(18, 80));
        bool ok = std::abs(a - age) >= 3;
        for (int b : ages) ok = ok && std::abs(a - b) >= 3;
        if (ok) ages.push_back(a);
      }
      for (int a : ages) distractors.push_back(std::to_string(a));
      break;
    }
    case Relation::kColour:
      question({"What is {}'s favourite colour?", "Which colour does {} like best?"}, name_of(w, s));
      item.facts.push_back({key.relation, s, w.people[s].colour});
      break;
    case Relation::kPet:
      question({"What pet does {} have?", "Which animal does {} keep as a pet?"}, name_of(w, s));
      item.facts.push_back({key.relation, s, w.people[s].pet});
      break;
    case Relation::kFood:
      if (rng.chance(0.5))
        question({"What do {} eat?"}, w.animals[s].plural);
      else
        question({"What does {} eat?"}, a_an(w.animals[s].name));
      item.facts.push_back({key.relation, s, s});
      break;
    case Relation::kHome:
      question({"Where does {} live?", "What is the home of {}?"}, a_an(w.animals[s].name));
      item.facts.push_back({key.relation, s, s});
      break;
    case Relation::kLegs:
      question({"How many legs does {} have?"}, a_an(w.animals[s].name));
      item.facts.push_back({key.relation, s, w.animals[s].legs});
      break;
    case Relation::kSound:
      question({"What sound does {} make?", "What does {} say?"}, a_an(w.animals[s].name));
      item.facts.push_back({key.relation, s, s});
      break;
    case Relation::kBigger:
      question({"Which animal is bigger than {}?", "Which of these animals is bigger than {}?"},
               a_an(w.animals[s].name));
      compare(static_cast<int>(w.animals.size()), true, Relation::kBigger, animal);
      break;
    case Relation::kSmaller:
      question({"Which animal is smaller than {}?", "Which of these animals is smaller than {}?"},
               a_an(w.animals[s].name));
      compare(static_cast<int>(w.animals.size()), false, Relation::kBigger, animal);
      break;
    case Relation::kMaterial:
      question({"What is {} made of?", "What material is {} made of?"}, a_an(w.things[s].name));
      item.facts.push_back({key.relation, s, s});
      break;
    case Relation::kHeavier:
      question({"Which of these is heavier than {}?", "Which thing is heavier than {}?"}, a_an(w.things[s].name));
      compare(static_cast<int>(w.things.size()), true, Relation::kHeavier, thing);
      break;
    case Relation::kLighter:
      question({"Which of these is lighter than {}?", "Which thing is lighter than {}?"}, a_an(w.things[s].name));
      compare(static_cast<int>(w.things.size()), false, Relation::kHeavier, thing);
      break;
    case Relation::kWorkplace:
      question({"Where does {} work?", "Where would you find {} at work?"}, a_an(w.jobs[s].name));
      item.facts.push_back({key.relation, s, s});
      break;
    case Relation::kTool:
      question({"What does {} use at work?", "Which tool does {} use?"}, a_an(w.jobs[s].name));
      item.facts.push_back({key.relation, s, s});
      break;
    case Relation::kFeature:
      question({"Where is {}?", "Where does the town of {} lie?"}, w.towns[s].name);
      item.facts.push_back({key.relation, s, s});
      break;
  }
  if (correct.empty()) {
    correct = w.value(key.relation, s);
    distractors = distinct_others(w.values(key.relation), {correct}, 2, rng);
  }
  item.answer = position;
  item.choices = distractors;
  item.choices.insert(item.choices.begin() + position, correct);
  return item;
}

// ---- arithmetic word problems ----

namespace {

const char* const kCountables[] = {"apples",  "pears",   "cookies", "pencils", "marbles",  "stickers",
                                   "eggs",    "cards",   "shells",  "stamps",  "balloons", "candles",
                                   "buttons", "flowers", "plums",   "ribbons", "crayons",  "lemons"};
const char* const kContainers[] = {"bags", "boxes", "baskets", "packs", "jars", "tins"};

// Divisors of x in [2, 10], for sharing equally.
std::vector<int64_t> small_divisors(int64_t x) {
  std::vector<int64_t> d;
  for (int64_t k = 2; k <= 10; ++k)
    if (x % k == 0 && x / k >= 2) d.push_back(k);
  return d;
}

}  // namespace

MathItem make_math(const World& w, int steps, Rng& rng) {
  FLORA_ASSERT(steps >= 1 && steps <= 3);
  MathItem m;
  m.steps = steps;
  const int pi = static_cast<int>(rng.below(w.people.size()));
  const Person& p = w.people[pi];
  const std::string& q = name_of(w, other_person(w, pi, rng));
  const std::string items = rng.pick(kCountables);
  const std::string he = capitalize(World::he(p));
  std::vector<std::string> text, work;
  int budget = steps;
  int64_t x = 0;
  if (rng.chance(0.3)) {
    const int64_t k = rng.range(2, 9), b = rng.range(2, 12);
    const std::string box = rng.pick(kContainers);
    x = k * b;
    m.ops.push_back({MathOp::kStartGroups, k, b});
    text.push_back(fmt::format("{} has {} {} with {} {} in each.", p.name, k, box, b, items));
    work.push_back(fmt::format("{} has {} * {} = {} {}.", p.name, k, b, x, items));
    --budget;
  } else {
    x = rng.range(2, 50);
    m.ops.push_back({MathOp::kStart, x, 0});
    text.push_back(fmt::format("{} has {} {}.", p.name, x, items));
    work.push_back(fmt::format("{} starts with {} {}.", p.name, x, items));
  }
  bool shared = false;
  while (budget > 0) {
    enum { kAdd, kSub, kGroups, kShare };
    std::vector<int> choices = {kAdd};
    if (x >= 4) choices.push_back(kSub);
    if (budget >= 2) choices.push_back(kGroups);
    if (budget == 1 && !small_divisors(x).empty()) choices.push_back(kShare);
    const int c = rng.pick(choices);
    if (c == kAdd) {
      const int64_t b = rng.range(2, 30);
      switch (rng.below(3)) {
        case 0:
          text.push_back(fmt::format("{} buys {} more {}.", he, b, items));
          break;
        case 1:
          text.push_back(fmt::format("{} gives {} {} more {}.", q, World::him(p), b, items));
          break;
        default:
          text.push_back(fmt::format("{} finds {} more {}.", he, b, items));
          break;
      }
      work.push_back(fmt::format("{} gets {} more, so {} + {} = {}.", he, b, x, b, x + b));
      m.ops.push_back({MathOp::kAdd, b, 0});
      x += b;
      budget -= 1;
    } else if (c == kSub) {
      const int64_t b = rng.range(2, x - 2);
      if (rng.chance(0.5)) {
        text.push_back(fmt::format("{} gives {} {} to {}.", he, b, items, q));
        work.push_back(fmt::format("{} gives away {}, so {} - {} = {}.", he, b, x, b, x - b));
      } else {
        text.push_back(fmt::format("{} loses {} of the {}.", he, b, items));
        work.push_back(fmt::format("{} loses {}, so {} - {} = {}.", he, b, x, b, x - b));
      }
      m.ops.push_back({MathOp::kSub, b, 0});
      x -= b;
      budget -= 1;
    } else if (c == kGroups) {
      const int64_t k = rng.range(2, 5), b = rng.range(2, 8);
      const std::string box = rng.pick(kContainers);
      text.push_back(fmt::format("{} buys {} {} with {} {} in each.", he, k, box, b, items));
      work.push_back(
          fmt::format("The {} hold {} * {} = {} {}, so {} + {} = {}.", box, k, b, k * b, items, x, k * b, x + k * b));
      m.ops.push_back({MathOp::kAddGroups, k, b});
      x += k * b;
      budget -= 2;
    } else {
      const int64_t k = rng.pick(small_divisors(x));
      text.push_back(fmt::format("{} shares the {} equally among {} friends. How many {} does each friend get?", he,
                                 items, k, items));
      work.push_back(fmt::format("Each friend gets {} / {} = {}.", x, k, x / k));
      m.ops.push_back({MathOp::kShare, k, 0});
      x /= k;
      budget -= 1;
      shared = true;
    }
  }
  if (!shared) {
    text.push_back(rng.chance(0.5) ? fmt::format("How many {} does {} have now?", items, p.name)
                                   : fmt::format("How many {} does {} have in the end?", items, p.name));
  }
  m.answer = x;
  work.push_back(fmt::format("The answer is {}.", x));
  m.problem = join_words(text);
  m.solution = join_words(work);
  for (const MathOp& op : m.ops) m.signature += fmt::format("{}:{}:{};", static_cast<int>(op.kind), op.a, op.b);
  return m;
}

// ---- stories and dialogues ----

namespace {

const char* const kDays[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
const char* const kSpots[] = {
    "in the park",   "by the river", "behind the school", "near the market",           "under the old bridge",
    "in the garden", "on the hill",  "by the mill",       "at the edge of the forest", "next to the church"};
const char* const kGifts[] = {"a cake",          "a basket of apples", "a jar of honey",
                              "a loaf of bread", "a bunch of flowers", "a new scarf"};
const char* const kMeals[] = {"soup",           "pancakes",    "apple pie", "bread and cheese",
                              "rice and beans", "a big salad", "noodles",   "fish pie"};
struct Activity {
  const char* past;
  const char* base;
};
const Activity kActivities[] = {{"went fishing", "go fishing"},
                                {"played cards", "play cards"},
                                {"baked bread", "bake bread"},
                                {"planted flowers", "plant flowers"},
                                {"walked in the park", "walk in the park"},
                                {"painted the fence", "paint the fence"},
                                {"visited the market", "visit the market"},
                                {"fed the ducks", "feed the ducks"},
                                {"watched the boats", "watch the boats"},
                                {"climbed the hill", "climb the hill"}};
const Activity kIndoor[] = {{"played cards", "play cards"},  {"played chess", "play chess"},
                            {"read books", "read books"},    {"drew pictures", "draw pictures"},
                            {"baked a cake", "bake a cake"}, {"sang songs", "sing songs"}};
const char* const kContests[] = {"running race",  "baking contest",  "chess game",
                                 "swimming race", "singing contest", "drawing contest"};
const char* const kWhen[] = {"within an hour", "after lunch", "the same afternoon", "before dinner"};
const char* const kGroceries[] = {"apples", "eggs", "pears", "carrots", "onions", "potatoes", "lemons", "plums"};
const char* const kLostSpots[] = {"on the kitchen table", "under your bed", "in the garden", "by the front door",
                                  "in your bag",          "on the bus",     "at the bakery", "in the bathroom"};
struct Lendable {
  const char* thing;
  const char* reason;          // "I want to ..." in the dialogue
  const char* reason_summary;  // "wants to ..." in the summary
};
const Lendable kLendables[] = {
    {"bicycle", "I want to ride to {}.", "wants to ride to {}"},
    {"book", "I want to read it on the train to {}.", "wants to read it on the train to {}"},
    {"bucket", "I need to water my garden before I go to {}.", "needs to water the garden"},
    {"chair", "Some friends from {} are coming tonight.", "has guests from {}"},
    {"blanket", "My cousin from {} is staying with me.", "has a cousin from {} staying"},
    {"pencil", "I have to write a letter to {}.", "has to write a letter to {}"},
};

struct People {
  const Person* a;
  const Person* b;
  int ai, bi;
};

People two_people(const World& w, Rng& rng) {
  const int ai = static_cast<int>(rng.below(w.people.size()));
  const int bi = other_person(w, ai, rng);
  return {&w.people[ai], &w.people[bi], ai, bi};
}

std::string sentences(const std::vector<std::string>& parts) { return join_words(parts); }

SummaryItem lost_pet(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  const std::string& pet = w.animals[a->pet].name;
  const std::string day = rng.pick(kDays), spot1 = rng.pick(kSpots);
  std::string spot2 = rng.pick(kSpots);
  while (spot2 == spot1) spot2 = rng.pick(kSpots);
  const std::string& town = w.towns[a->town].name;
  std::vector<std::string> s;
  switch (rng.below(3)) {
    case 0:
      s.push_back(fmt::format("{} lives in {} and works as {}.", a->name, town, a_an(w.jobs[a->job].name)));
      break;
    case 1:
      s.push_back(fmt::format("{} is {} from {}.", a->name, a_an(w.jobs[a->job].name), town));
      break;
    default:
      s.push_back(fmt::format("{} has a pet {} called Pip.", a->name, pet));
      break;
  }
  s.push_back(rng.chance(0.5) ? fmt::format("One {} morning, {}'s {} ran away.", day, a->name, pet)
                              : fmt::format("On {}, {} left the gate open, and {} {} ran away.", day, a->name,
                                            World::his(*a), pet));
  switch (rng.below(3)) {
    case 0:
      s.push_back(fmt::format("{} looked for it {}, but it was not there.", capitalize(World::he(*a)), spot1));
      break;
    case 1:
      s.push_back(fmt::format("{} searched {} for a long time.", capitalize(World::he(*a)), spot1));
      break;
    default:
      s.push_back(fmt::format("{} called its name {}, but nothing came.", capitalize(World::he(*a)), spot1));
      break;
  }
  s.push_back(rng.chance(0.5) ? fmt::format("Later that day, {} found the {} {}.", b->name, pet, spot2)
                              : fmt::format("In the evening, {}, {} from {}, saw the {} {}.", b->name,
                                            a_an(w.jobs[b->job].name), w.towns[b->town].name, pet, spot2));
  std::string summary = fmt::format("{}'s {} ran away on {}, and {} found it {}", a->name, pet, day, b->name, spot2);
  if (rng.chance(0.5)) {
    s.push_back(fmt::format("{} brought the {} back, and {} thanked {}.", b->name, pet, a->name, World::him(*b)));
    summary += " and brought it back.";
  } else {
    const std::string gift = rng.pick(kGifts);
    s.push_back(fmt::format("{} brought it home, and {} was so happy that {} gave {} {}.", b->name, a->name,
                            World::he(*a), b->name, gift));
    summary += fmt::format(". {} thanked {} with {}.", a->name, World::him(*b), gift);
  }
  return {false, sentences(s), summary};
}

SummaryItem broken_tool(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  const Job& job = w.jobs[a->job];
  const std::string day = rng.pick(kDays), when = rng.pick(kWhen);
  std::vector<std::string> s;
  s.push_back(rng.chance(0.5) ? fmt::format("{} is {} in {}.", a->name, a_an(job.name), w.towns[a->town].name)
                              : fmt::format("{} works as {} in {}.", a->name, a_an(job.name), w.towns[a->town].name));
  s.push_back(rng.chance(0.5)
                  ? fmt::format("On {}, {} {} broke just before work.", day, World::his(*a), job.tool)
                  : fmt::format("One {}, {}'s {} broke in the middle of the morning.", day, a->name, job.tool));
  s.push_back(
      rng.chance(0.5)
          ? fmt::format("Without it {} could not work, so {} asked {} for help.", a->name, World::he(*a), b->name)
          : fmt::format("{} did not know what to do, so {} called {}.", a->name, World::he(*a), b->name));
  s.push_back(fmt::format("{}, {} from {}, came {} and fixed the {}.", b->name, a_an(w.jobs[b->job].name),
                          w.towns[b->town].name, when, job.tool));
  std::string summary = fmt::format("{}'s {} broke on {}, and {} fixed it {}, so {} could work again.", a->name,
                                    job.tool, day, b->name, when, a->name);
  if (rng.chance(0.5)) {
    s.push_back(fmt::format("{} finished {} work on time and thanked {}.", a->name, World::his(*a), b->name));
  } else {
    const std::string meal = rng.pick(kMeals);
    s.push_back(fmt::format("{} was able to work again and invited {} for {}.", a->name, b->name, meal));
    summary += fmt::format(" {} invited {} for {}.", a->name, b->name, meal);
  }
  return {false, sentences(s), summary};
}

SummaryItem visit(const World& w, Rng& rng) {
  auto [a, b, ai, bi] = two_people(w, rng);
  for (int tries = 0; tries < 50 && b->town == a->town; ++tries) {
    bi = other_person(w, ai, rng);
    b = &w.people[bi];
  }
  const std::string day = rng.pick(kDays), meal = rng.pick(kMeals);
  const std::string& tb = w.towns[b->town].name;
  const Activity& act1 = rng.pick(kActivities);
  const Activity* act2 = &rng.pick(kActivities);
  while (act2 == &act1) act2 = &rng.pick(kActivities);
  std::vector<std::string> s;
  s.push_back(b->town == a->town ? fmt::format("On {}, {} walked across {} to visit {}.", day, a->name, tb, b->name)
                                 : fmt::format("On {}, {} took the bus from {} to {} to visit {}.", day, a->name,
                                               w.towns[a->town].name, tb, b->name));
  s.push_back(rng.chance(0.5) ? fmt::format("{} was happy to see {}.", b->name, World::him(*a))
                              : fmt::format("{} was waiting at the door.", b->name));
  std::string activities;
  if (rng.chance(0.5)) {
    s.push_back(fmt::format("Together they {}.", act1.past));
    activities = act1.past;
  } else {
    s.push_back(fmt::format("First they {}, and then they {}.", act1.past, act2->past));
    activities = fmt::format("{} and {}", act1.past, act2->past);
  }
  s.push_back(fmt::format("Then they ate {} at {}'s house.", meal, b->name));
  s.push_back(rng.chance(0.5) ? fmt::format("In the evening, {} went back home, tired but happy.", a->name)
                              : fmt::format("{} promised to come back soon.", a->name));
  return {false, sentences(s),
          fmt::format("{} visited {} in {} on {}; they {} and ate {}.", a->name, b->name, tb, day, activities, meal)};
}

SummaryItem market(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  const std::vector<std::string> goods = {"a cabbage",
                                          "a loaf of bread",
                                          "a jar of honey",
                                          "a bag of apples",
                                          fmt::format("a {} scarf", w.colours[a->colour]),
                                          "a new pan",
                                          "a basket of eggs",
                                          "a cake"};
  std::vector<std::string> two = distinct_others(goods, {}, 2, rng);
  const int64_t p1 = rng.range(2, 12), p2 = rng.range(2, 12), left = rng.range(1, 15);
  const int64_t coins = p1 + p2 + left;
  const std::string& town = w.towns[a->town].name;
  std::vector<std::string> s;
  s.push_back(fmt::format("{} went to the market in {} with {} coins.", a->name, town, coins));
  s.push_back(
      fmt::format("{} bought {} for {} coins and {} for {} coins.", capitalize(World::he(*a)), two[0], p1, two[1], p2));
  if (rng.chance(0.5))
    s.push_back(fmt::format("On the way home, {} met {} and showed {} what {} had bought.", World::he(*a), b->name,
                            World::him(*b), World::he(*a)));
  s.push_back(fmt::format("{} still had {} coins left.", capitalize(World::he(*a)), left));
  return {false, sentences(s),
          fmt::format("{} spent {} coins at the market in {} on {} and {}.", a->name, p1 + p2, town, two[0], two[1])};
}

SummaryItem contest(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  const bool a_wins = rng.chance(0.5);
  const Person& win = a_wins ? *a : *b;
  const Person& lose = a_wins ? *b : *a;
  const std::string what = rng.pick(kContests), day = rng.pick(kDays);
  const std::string& town = w.towns[a->town].name;
  std::vector<std::string> s;
  s.push_back(fmt::format("{} and {} had a {} in {} on {}.", a->name, b->name, what, town, day));
  switch (rng.below(3)) {
    case 0:
      s.push_back("Many people came to watch.");
      break;
    case 1:
      s.push_back("The whole town came to watch.");
      break;
    default:
      s.push_back("It was a sunny day, and the square was full.");
      break;
  }
  s.push_back(rng.chance(0.5) ? fmt::format("At first {} was ahead, but in the end {} won.", lose.name, win.name)
                              : fmt::format("{} won easily.", win.name));
  s.push_back(rng.chance(0.5) ? fmt::format("{} said that {} would win next time.", lose.name, World::he(lose))
                              : fmt::format("{} shook {}'s hand and smiled.", lose.name, win.name));
  return {false, sentences(s), fmt::format("{} beat {} in a {} in {} on {}.", win.name, lose.name, what, town, day)};
}

SummaryItem rainy_picnic(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  const std::string day = rng.pick(kDays), spot = rng.pick(kSpots);
  std::vector<std::string> food =
      distinct_others({"sandwiches", "a cake", "lemonade", "apple pie", "cheese", "cookies"}, {}, 2, rng);
  const Activity& act = rng.pick(kIndoor);
  std::vector<std::string> s;
  s.push_back(fmt::format("{} and {} planned a picnic {} for {}.", a->name, b->name, spot, day));
  s.push_back(fmt::format("{} made {} and {} brought {}.", a->name, food[0], b->name, food[1]));
  s.push_back(rng.chance(0.5) ? fmt::format("But on {} it rained all morning.", day)
                              : fmt::format("But when {} came, it started to rain.", day));
  s.push_back(fmt::format("So they stayed at {}'s house and {} instead.", a->name, act.past));
  if (rng.chance(0.5)) s.push_back("They ate the picnic on the kitchen floor and laughed.");
  return {false, sentences(s),
          fmt::format("{} and {} planned a picnic for {}, but it rained, so they {} at {}'s house instead.", a->name,
                      b->name, day, act.past, a->name)};
}

// Dialogue lines "Name: text" joined by newlines.
std::string lines(const std::vector<std::pair<const Person*, std::string>>& turns) {
  std::string out;
  for (const auto& [who, text] : turns) out += fmt::format("{}{}: {}", out.empty() ? "" : "\n", who->name, text);
  return out;
}

SummaryItem plan_meeting(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  const size_t d1 = rng.below(7);
  const size_t d2 = (d1 + 1 + rng.below(6)) % 7;
  const Activity& act = rng.pick(kActivities);
  const std::string& town = w.towns[rng.below(w.towns.size())].name;
  const int64_t hour = rng.range(1, 11);
  const bool busy = rng.chance(0.5);
  std::vector<std::pair<const Person*, std::string>> t;
  t.push_back({a, fmt::format("Hi {}! Are you free on {}?", b->name, kDays[d1])});
  std::string day = kDays[d1];
  const std::string ask = rng.chance(0.5) ? fmt::format("Shall we {} in {}?", act.base, town)
                                          : fmt::format("Do you want to {} in {}?", act.base, town);
  if (busy) {
    t.push_back({b, fmt::format("Sorry, I work {} that day. What about {}?", w.jobs[b->job].place, kDays[d2])});
    t.push_back({a, fmt::format("{} is fine. {}", kDays[d2], ask)});
    day = kDays[d2];
  } else {
    t.push_back({b, "Yes, I am. Why?"});
    t.push_back({a, ask});
  }
  t.push_back({b, "Good idea! What time?"});
  t.push_back({a, fmt::format("At {} o'clock?", hour)});
  t.push_back({b, rng.chance(0.5) ? fmt::format("OK, see you at {}.", hour) : "Perfect. See you then."});
  std::string summary =
      fmt::format("{} and {} will {} in {} on {} at {} o'clock.", a->name, b->name, act.base, town, day, hour);
  if (busy) summary = fmt::format("{} works on {}, so {}", b->name, kDays[d1], summary);
  return {true, lines(t), summary};
}

SummaryItem borrow(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  const Lendable& l = rng.pick(kLendables);
  const std::string& town = w.towns[rng.below(w.towns.size())].name;
  const std::string day = rng.pick(kDays);
  std::vector<std::pair<const Person*, std::string>> t;
  t.push_back({a, fmt::format("{}, can I borrow your {}?", b->name, l.thing)});
  t.push_back({b, "Sure. What do you need it for?"});
  t.push_back({a, fmt::format(fmt::runtime(l.reason), town)});
  std::string summary;
  const std::string why = fmt::format(fmt::runtime(l.reason_summary), town);
  if (rng.chance(0.5)) {
    t.push_back({b, fmt::format("OK. I'll bring it on {}.", day)});
    summary = fmt::format("{} will lend {} {} {} on {}, because {} {}.", b->name, a->name, World::his(*b), l.thing, day,
                          a->name, why);
  } else {
    t.push_back({b, fmt::format("You can take it now, but please give it back by {}.", day)});
    summary = fmt::format("{} {}, so {} lends {} {} {} until {}.", a->name, why, b->name, World::him(*a),
                          World::his(*b), l.thing, day);
  }
  t.push_back({a, "Thanks a lot!"});
  return {true, lines(t), summary};
}

SummaryItem pet_sitting(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  const Animal& pet = w.animals[a->pet];
  int other = static_cast<int>(rng.below(w.towns.size()));
  if (other == a->town) other = (other + 1) % static_cast<int>(w.towns.size());
  const std::string& town = w.towns[other].name;
  const int64_t days = rng.range(2, 9);
  const std::string day = rng.pick(kDays);
  std::vector<std::pair<const Person*, std::string>> t;
  t.push_back(
      {a, fmt::format("Hi {}, I'm going to {} for {} days. Could you feed my {}?", b->name, town, days, pet.name)});
  t.push_back({b, "Of course. What does it eat?"});
  t.push_back({a, fmt::format("{}, twice a day.", capitalize(pet.food))});
  t.push_back({b, "No problem. When do you leave?"});
  t.push_back({a, fmt::format("On {}.", day)});
  t.push_back({b, rng.chance(0.5) ? "Have a good trip!" : "Have fun, and don't worry about it."});
  return {true, lines(t),
          fmt::format("{} will feed {}'s {} while {} is in {} for {} days from {}; it eats {}.", b->name, a->name,
                      pet.name, a->name, town, days, day, pet.food)};
}

SummaryItem shopping(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  std::vector<std::string> two =
      distinct_others(std::vector<std::string>(std::begin(kGroceries), std::end(kGroceries)), {}, 2, rng);
  const int64_t n = rng.range(2, 12), m = rng.range(2, 12);
  const bool bread = rng.chance(0.5);
  const char* when = rng.chance(0.5) ? "this evening" : "after lunch";
  std::vector<std::pair<const Person*, std::string>> t;
  t.push_back({a, "Are you going to the market today?"});
  t.push_back({b, "Yes, in an hour. Do you need anything?"});
  t.push_back({a, fmt::format("Could you buy me {} {} and {} {}?", n, two[0], m, two[1])});
  t.push_back({b, "Sure. Anything else?"});
  t.push_back({a, bread ? "A loaf of bread, please." : "No, that's all. Thank you!"});
  t.push_back({b, fmt::format("I'll bring them {}.", when)});
  return {true, lines(t),
          fmt::format("{} will buy {} {} and {} {}{} for {} at the market and bring them {}.", b->name, n, two[0], m,
                      two[1], bread ? " and a loaf of bread" : "", a->name, when)};
}

SummaryItem lost_thing(const World& w, Rng& rng) {
  const auto [a, b, ai, bi] = two_people(w, rng);
  static const char* const kSmall[] = {"key", "book", "pencil", "shoe", "cup", "spoon", "sock", "coin"};
  const std::string thing = rng.pick(kSmall), spot = rng.pick(kLostSpots);
  std::vector<std::pair<const Person*, std::string>> t;
  t.push_back({a, fmt::format("Have you seen my {}? I can't find it anywhere.", thing)});
  t.push_back({b, fmt::format("I think you left it {}.", spot)});
  const bool found = rng.chance(0.5);
  t.push_back(
      {a, found ? fmt::format("Oh, you're right! Thanks, {}.", b->name) : "I looked there already. It's not there."});
  if (!found) t.push_back({b, "Then ask at the bakery. Someone may have found it."});
  std::string your_spot = spot;  // the summary speaks of A, not to A
  if (auto pos = your_spot.find("your "); pos != std::string::npos)
    your_spot.replace(pos, 5, std::string(World::his(*a)) + " ");
  return {true, lines(t),
          found ? fmt::format("{} could not find {} {}, and {} reminded {} that it was {}.", a->name, World::his(*a),
                              thing, b->name, World::him(*a), your_spot)
                : fmt::format("{} lost {} {}; it was not {}, so {} told {} to ask at the bakery.", a->name,
                              World::his(*a), thing, your_spot, b->name, World::him(*a))};
}

}  // namespace

SummaryItem make_story(const World& w, Rng& rng) {
  switch (rng.below(6)) {
    case 0:
      return lost_pet(w, rng);
    case 1:
      return broken_tool(w, rng);
    case 2:
      return visit(w, rng);
    case 3:
      return market(w, rng);
    case 4:
      return contest(w, rng);
    default:
      return rainy_picnic(w, rng);
  }
}

SummaryItem make_dialogue(const World& w, Rng& rng) {
  switch (rng.below(5)) {
    case 0:
      return plan_meeting(w, rng);
    case 1:
      return borrow(w, rng);
    case 2:
      return pet_sitting(w, rng);
    case 3:
      return shopping(w, rng);
    default:
      return lost_thing(w, rng);
  }
}

}  // namespace flora::synth
